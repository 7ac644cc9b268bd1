"""Users, certificates and ACLs of a secured local broker (``broker start --sasl/--tls``).

A secured cluster keeps a PLAINTEXT listener ``INTERNAL`` for inter-broker traffic (its
principal, ANONYMOUS, is a super user, as is the controller's) and adds the listener ``CLIENT``
that clients use: SASL_PLAINTEXT, SASL_SSL or SSL. ACLs are on
(``allow.everyone.if.no.acl.found=false``), with three users whose passwords are new on every
start:

- ``admin``: a super user;
- ``alice``: may use topics and consumer groups whose names start with ``alice-``
  (with TLS, a client certificate with CN=alice is her as well);
- ``bob``: no permissions at all.

``DIR/credentials.json`` (mode 0600) holds the passwords and the paths of the TLS files;
:func:`read_credentials` loads it. Passwords are never logged.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# Where they are defined: confluent_kafka.admin re-exports them without declaring it for mypy.
from confluent_kafka.admin._acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
)
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from trpc_kafka._tools import tls as _tls

__all__ = [
    "ALLOWED_PREFIX",
    "CLIENT_LISTENER",
    "CREDENTIALS_FILE",
    "INTERNAL_LISTENER",
    "SASL_MECHANISMS",
    "USERS",
    "Credentials",
    "grant_acls",
    "listener_properties",
    "new_credentials",
    "protocol_of",
    "read_credentials",
    "scram_format_args",
]

SASL_MECHANISMS: Final[Mapping[str, tuple[str, ...]]] = {
    "scram": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
    "plain": ("PLAIN",),
}
SUPER_USER: Final = "admin"
USERS: Final = (SUPER_USER, "alice", "bob")
ALLOWED_USER: Final = "alice"
ALLOWED_PREFIX: Final = "alice-"
"""Topics and consumer groups whose names start with this are alice's to use."""
CREDENTIALS_FILE: Final = "credentials.json"
TLS_DIR: Final = "tls"
CLIENT_LISTENER: Final = "CLIENT"
INTERNAL_LISTENER: Final = "INTERNAL"

_AUTHORIZER: Final = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SCRAM_MODULE: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE: Final = "org.apache.kafka.common.security.plain.PlainLoginModule"


def protocol_of(sasl: str | None, tls: bool) -> str:
    """The security protocol of the client listener; PLAINTEXT for an unsecured cluster."""
    if sasl is None:
        return "SSL" if tls else "PLAINTEXT"
    return "SASL_SSL" if tls else "SASL_PLAINTEXT"


@dataclass(frozen=True)
class Credentials:
    """What a client of a secured local cluster needs (the content of ``credentials.json``).

    ``passwords`` maps each SASL user to its password (empty without SASL). The TLS paths are
    empty without TLS. Secrets are left out of ``repr``.
    """

    protocol: str
    mechanisms: tuple[str, ...]
    passwords: Mapping[str, str] = field(repr=False)
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    client_key_password: str = field(default="", repr=False)
    untrusted_ca_file: str = ""
    untrusted_client_cert_file: str = ""
    untrusted_client_key_file: str = ""
    allowed_prefix: str = ALLOWED_PREFIX

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def password(self, user: str) -> str:
        try:
            return self.passwords[user]
        except KeyError:
            raise KeyError(f"no SASL user {user!r}; users: {', '.join(self.passwords)}") from None

    def address_keys(self, user: str = ALLOWED_USER, mechanism: str | None = None) -> str:
        """The address keys (after ``?``) that connect as ``user``: protocol, SASL, CA file."""
        keys = [f"protocol={self.protocol}"]
        if self.sasl:
            keys += [
                f"mechanism={mechanism or self.mechanisms[-1]}",
                f"user={quote(user, safe='')}",
                f"password={quote(self.password(user), safe='')}",
            ]
        if self.tls:
            keys.append(f"tlsCAFile={quote(self.ca_file, safe='/')}")
        return "&".join(keys)

    def client_settings(
        self, user: str = SUPER_USER, mechanism: str | None = None
    ) -> dict[str, str]:
        """librdkafka settings of a plain confluent-kafka client connecting as ``user``."""
        settings = {"security.protocol": self.protocol}
        if self.sasl:
            settings.update(
                {
                    "sasl.mechanism": mechanism or self.mechanisms[-1],
                    "sasl.username": user,
                    "sasl.password": self.password(user),
                }
            )
        if self.tls:
            settings["ssl.ca.location"] = self.ca_file
        return settings


def new_credentials(directory: Path, sasl: str | None, tls: bool) -> Credentials:
    """New passwords (and certificates with ``tls``) for a start; writes ``credentials.json``."""
    mechanisms = SASL_MECHANISMS[sasl] if sasl is not None else ()
    passwords = {user: secrets.token_urlsafe(18) for user in USERS} if sasl is not None else {}
    files: dict[str, str] = {}
    if tls:
        made = _tls.generate(directory / TLS_DIR, client=ALLOWED_USER)
        files = {
            "ca_file": str(made.ca),
            "client_cert_file": str(made.client_cert),
            "client_key_file": str(made.client_key),
            "client_key_password": made.client_key_password,
            "untrusted_ca_file": str(made.untrusted_ca),
            "untrusted_client_cert_file": str(made.untrusted_client_cert),
            "untrusted_client_key_file": str(made.untrusted_client_key),
        }
    creds = Credentials(protocol_of(sasl, tls), mechanisms, passwords, **files)
    path = directory / CREDENTIALS_FILE
    data = asdict(creds)
    data["passwords"] = dict(creds.passwords)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600: the passwords never sit in a file others can read, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)
    return creds


def read_credentials(directory: Path) -> Credentials | None:
    """The credentials of the cluster last started in ``directory``; None if unsecured."""
    try:
        raw: Any = json.loads((directory / CREDENTIALS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    raw["mechanisms"] = tuple(raw["mechanisms"])
    return Credentials(**raw)


def scram_format_args(creds: Credentials) -> list[str]:
    """``StorageTool format`` arguments that create every user for every SCRAM mechanism."""
    args: list[str] = []
    for mechanism in creds.mechanisms:
        if not mechanism.startswith("SCRAM-"):
            continue
        for user, password in creds.passwords.items():
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return args


def listener_properties(creds: Credentials, listener: str = CLIENT_LISTENER) -> dict[str, str]:
    """Broker properties of the secured ``listener``: authorizer, SASL users and TLS."""
    prefix = f"listener.name.{listener.lower()}."
    props = {
        "authorizer.class.name": _AUTHORIZER,
        # ANONYMOUS: the PLAINTEXT inter-broker and controller listeners (and TLS clients
        # without a certificate on an SSL listener).
        "super.users": f"User:{SUPER_USER};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }
    if creds.sasl:
        props[prefix + "sasl.enabled.mechanisms"] = ",".join(creds.mechanisms)
        for mechanism in creds.mechanisms:
            key = f"{prefix}{mechanism.lower()}.sasl.jaas.config"
            if mechanism == "PLAIN":
                users = " ".join(f'user_{u}="{p}"' for u, p in creds.passwords.items())
                props[key] = f"{_PLAIN_MODULE} required {users};"
            else:  # SCRAM: the users live in the cluster metadata (created at format)
                props[key] = f"{_SCRAM_MODULE} required;"
    if creds.tls:
        ca = Path(creds.ca_file)
        props.update(
            {
                prefix + "ssl.keystore.type": "PEM",
                prefix + "ssl.keystore.location": str(ca.with_name("broker.pem")),
                prefix + "ssl.truststore.type": "PEM",
                prefix + "ssl.truststore.location": str(ca),
            }
        )
        if not creds.sasl:
            # A client may show a certificate: CN=alice is alice; without one it is ANONYMOUS.
            props[prefix + "ssl.client.auth"] = "requested"
            props["ssl.principal.mapping.rules"] = "RULE:^CN=([^,]+)$/$1/,DEFAULT"
    return props


def _alice_acls() -> list[AclBinding]:
    return [
        AclBinding(
            kind,
            ALLOWED_PREFIX,
            ResourcePatternType.PREFIXED,
            f"User:{ALLOWED_USER}",
            "*",
            AclOperation.ALL,
            AclPermissionType.ALLOW,
        )
        for kind in (ResourceType.TOPIC, ResourceType.GROUP)
    ]


def grant_acls(internal: Sequence[str], deadline: float) -> None:
    """Give alice her prefixes, through the INTERNAL listeners (``host:port`` of each node).

    Returns once every node enforces them: ACLs reach the brokers through the metadata log,
    a moment after the controller accepted them.
    """
    bindings = _alice_acls()
    admin = AdminClient({"bootstrap.servers": ",".join(internal)})
    for future in admin.create_acls(bindings).values():
        future.result(timeout=max(0.1, deadline - time.monotonic()))
    # None matches any name and host (the stubs do not say so).
    wanted = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        f"User:{ALLOWED_USER}",
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    for address in internal:
        node = AdminClient({"bootstrap.servers": address})
        while True:
            try:
                found = node.describe_acls(wanted).result(timeout=5)
            except KafkaException:
                found = []
            if len(found) >= len(bindings):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"ACLs not in effect on {address} in time")
            time.sleep(0.05)
