"""Certificates for a local broker's TLS listener, made per run with ``openssl``.

One call writes into a directory (files holding private keys are mode 0600)::

    ca.pem, ca.key                  the CA that clients trust (tlsCAFile=.../ca.pem)
    broker.pem                      the broker's key and certificate chain (Kafka PEM keystore)
    client.pem, client.key          a client certificate for mTLS (CN = the client's name);
                                    the key is encrypted with ``client_key_password``
    untrusted-ca.pem                a second CA that signed nothing the broker shows: a client
                                    trusting only it fails the TLS handshake
    untrusted-client.pem, .key      a client certificate signed by that second CA

The broker certificate names 127.0.0.1 and localhost (subjectAltName), so host name
verification passes for both. Keys are EC P-256: generating them takes milliseconds.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["TlsError", "TlsFiles", "generate"]

DAYS: Final = 30
_TIMEOUT: Final = 30.0
# A config of our own: the system's openssl.cnf may add CA extensions to every certificate.
_CONFIG: Final = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_KEY_PASSWORD_ENV: Final = "TRPC_KAFKA_TLS_KEY_PASSWORD"


class TlsError(RuntimeError):
    """openssl is missing or failed; the message names the command's output."""


@dataclass(frozen=True)
class TlsFiles:
    """Where :func:`generate` put everything (absolute paths)."""

    ca: Path
    broker: Path
    client_cert: Path
    client_key: Path
    client_key_password: str = field(repr=False)
    untrusted_ca: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path


def _openssl() -> str:
    configured = os.environ.get("OPENSSL")
    found = shutil.which(configured or "openssl")
    if found is None:
        raise TlsError(
            "openssl not found on PATH: the TLS listener of the local broker needs "
            "certificates made with it; install openssl or set OPENSSL=/path/to/openssl"
        )
    return found


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TlsError(f"cannot run {cmd[0]}: {exc}") from None
    if done.returncode != 0:
        shown = " ".join(cmd[1:4])
        raise TlsError(
            f"openssl {shown} ... failed (exit {done.returncode}): {done.stderr.strip()}"
        )


def _certificate(
    openssl: str,
    directory: Path,
    *,
    name: str,
    subject: str,
    extensions: str,
    issuer: tuple[Path, Path] | None,
    key_password: str | None = None,
) -> tuple[Path, Path]:
    """A new EC key and its certificate (self-signed when ``issuer`` is None)."""
    key = directory / f"{name}.key"
    cert = directory / f"{name}.pem"
    cmd = [
        openssl,
        "req",
        "-x509",
        "-config",
        str(directory / "openssl.cnf"),
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        str(DAYS),
        "-sha256",
        "-subj",
        subject,
        "-extensions",
        extensions,
        "-set_serial",
        str(secrets.randbits(63)),
    ]
    env = None
    if key_password is not None:
        # From the environment of openssl, never its command line (which `ps` shows).
        cmd += ["-passout", f"env:{_KEY_PASSWORD_ENV}"]
        env = {**os.environ, _KEY_PASSWORD_ENV: key_password}
    else:
        cmd.append("-noenc")
    if issuer is not None:
        cmd += ["-CA", str(issuer[0]), "-CAkey", str(issuer[1])]
    _run(cmd, directory, env)
    key.chmod(0o600)
    return cert, key


def generate(
    directory: str | os.PathLike[str],
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    client: str = "alice",
) -> TlsFiles:
    """Make a CA, a broker certificate for ``hosts`` and the client certificates (see above).

    Everything is new on every call; files of an earlier call in ``directory`` are replaced.
    """
    openssl = _openssl()
    where = Path(directory).resolve()
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o700)
    san = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    (where / "openssl.cnf").write_text(_CONFIG.format(san=san), encoding="utf-8")

    ca = _certificate(
        openssl, where, name="ca", subject="/CN=trpc-kafka local CA", extensions="ca", issuer=None
    )
    cert, key = _certificate(
        openssl,
        where,
        name="broker-cert",
        subject=f"/CN={hosts[0]}",
        extensions="server",
        issuer=ca,
    )
    # Kafka's PEM keystore file: the private key, then the certificate chain.
    broker = where / "broker.pem"
    broker.touch(mode=0o600)
    broker.chmod(0o600)
    broker.write_text(
        key.read_text(encoding="ascii") + cert.read_text(encoding="ascii"), encoding="ascii"
    )
    key.unlink()
    cert.unlink()

    password = secrets.token_urlsafe(18)
    client_cert, client_key = _certificate(
        openssl,
        where,
        name="client",
        subject=f"/CN={client}",
        extensions="client",
        issuer=ca,
        key_password=password,
    )
    untrusted = _certificate(
        openssl,
        where,
        name="untrusted-ca",
        subject="/CN=trpc-kafka untrusted CA",
        extensions="ca",
        issuer=None,
    )
    untrusted_cert, untrusted_key = _certificate(
        openssl,
        where,
        name="untrusted-client",
        subject=f"/CN={client}",
        extensions="client",
        issuer=untrusted,
    )
    return TlsFiles(
        ca=ca[0],
        broker=broker,
        client_cert=client_cert,
        client_key=client_key,
        client_key_password=password,
        untrusted_ca=untrusted[0],
        untrusted_client_cert=untrusted_cert,
        untrusted_client_key=untrusted_key,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
