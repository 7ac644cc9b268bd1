"""The YAML configuration file, with tRPC-Go's ``trpc_go.yaml`` schema.

A file written for a tRPC-Go service loads unchanged: the sections ``global``, ``server``,
``client`` and ``plugins`` are read, every key this library does not use is kept (in ``extra``,
or raw for ``global`` and ``plugins``), never rejected.

What is applied at load time, as tRPC-Go's ``RepairConfig`` does:

- ``${NAME}`` in the raw text is replaced by the environment variable ``NAME`` (unset: empty
  string). ``$NAME`` without braces is left alone, as in tRPC-Go, because passwords contain ``$``.
- A service's ``filter`` list is the server-level (or client-level) list first, then its own,
  duplicates dropped. A service's ``timeout`` defaults to the section's ``timeout``; ``0`` or
  unset means no timeout (``None``). ``protocol`` defaults to the section's ``protocol``; unlike
  tRPC-Go there is no implicit ``trpc`` (``""`` means not set).
- A client service's ``callee`` and ``name`` default to each other; ``namespace`` defaults to
  ``client.namespace``, then ``global.namespace``.

Not applied: ``close_wait_time`` is kept but waits for nothing (there is no naming registry to
deregister from); ``max_close_wait_time`` bounds the graceful close and is used as given (tRPC-Go
raises values under 10 s to 10 s; here 10 s is only the default).

Bad files raise ConfigError naming the file, the line and the key path
(``server.service[1].timeout``). Values of secret-looking keys never appear in messages or reprs
(one rule for the whole library: ``secrets.py``).

Hostile files are refused at load, never crash or hang the loader: control characters, tags
that do not construct, integers beyond 64 bits, recursive anchors and alias bombs (expansion is
bounded by the file's own size). Kafka addresses (kafka services' ``address``, kafka clients'
``target``) are parsed at load too, so ``new_server()`` reports a bad one at its line.

Why one module of about 850 lines: it is the one reader of one file format. The schema's
dataclasses, the node-by-node parser that keeps line numbers, its hostile-input checks and the
error texts that name file, line and key path change together (a new key touches all four);
split, each piece would import the others' privates.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trpc_kafka._config.address import (
    Side,
    is_registered,
    resolve_address,
    warn_other_side_keys,
)
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.secrets import MASK, is_secret_key, redact_text

DEFAULT_MAX_CLOSE_WAIT_MS: Final = 10_000
"""Default bound of the graceful close, as tRPC-Go's ``MaxCloseWaitTime``."""

DEFAULT_CONFIG_PATH: Final = "./trpc_python.yaml"

# tRPC-Go's expandenv: ``${NAME}`` only; a space, newline or quote before ``}`` means no match.
_ENV_REF: Final = re.compile(r'\$\{([^} \n"]*)\}')

_NULL_TAG: Final = "tag:yaml.org,2002:null"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_MERGING_TAGS: Final = frozenset((_MERGE_TAG, "tag:yaml.org,2002:value"))
# Scalars whose construction can fail (``!!int abc``, a 5000-digit integer, ``!!timestamp
# 2001-13-45``, bad base64): built while the tree is checked, so the error names their line.
_FALLIBLE_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("int", "float", "timestamp", "binary", "bool")
)

# libyaml's parser (PyYAML wheels ship it) is ~20x faster than the pure-Python one; both give
# nodes with line marks. The pure one is the fallback where libyaml is missing.
_BaseLoader: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_C_LOADER: Final = _BaseLoader is not yaml.SafeLoader
# First characters for which an implicit tag (int, float, bool, null, timestamp, merge) may
# apply; any other plain scalar is a string, without trying the resolver's regexes.
_IMPLICIT_FIRST: Final = frozenset(k for k in _BaseLoader.yaml_implicit_resolvers if k)
_STR_TAG: Final = "tag:yaml.org,2002:str"
_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_IMPLICIT_WORDS: Final = {
    **dict.fromkeys(("null", "Null", "NULL"), _NULL_TAG),
    **dict.fromkeys(
        (
            *("yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE"),
            *("false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"),
        ),
        _BOOL_TAG,
    ),
}
# The fast path holds while the resolvers are PyYAML's own: letters start only bool and null
# words, no wildcard or path resolvers (tests/config/test_file_hostile.py checks it).
_FAST_RESOLVE: Final = None not in _BaseLoader.yaml_implicit_resolvers and not getattr(
    _BaseLoader, "yaml_path_resolvers", None
)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader with a fast path for the common string scalar (half its time)."""

    def resolve(
        self,
        kind: type[Node],
        value: Any,
        implicit: tuple[bool, bool],
        # Bound once: called for every scalar of the file (280,000 for 40,000 services).
        _scalar: type[Node] = ScalarNode,
        _fast: bool = _FAST_RESOLVE,
        _first_chars: frozenset[str] = _IMPLICIT_FIRST,
        _words: dict[str, str] = _IMPLICIT_WORDS,
    ) -> str:
        if kind is _scalar and _fast:
            if not implicit[0]:  # quoted
                return _STR_TAG
            first = value[:1]
            if first not in _first_chars:
                if first:
                    return _STR_TAG
            elif first.isalpha():  # only the words of bool and null start with a letter
                return _words.get(value, _STR_TAG)
        return str(super().resolve(kind, value, implicit))


# Alias expansion bound (billion laughs): the nodes of the tree with every alias expanded may
# exceed the file's own node count (at most one per character) by this many. Past it, the loaded
# value would be exponentially larger than the file, and so would its repr.
_ALIAS_EXPANSION_ALLOWANCE: Final = 100_000


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` fit for reprs and logs: secret keys' values and URL secrets masked."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, key) for v in value)
    if key is not None and is_secret_key(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    return value


def expand_env(text: str) -> str:
    """Replace ``${NAME}`` with the environment variable's value (unset: ``""``), as tRPC-Go."""
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), "") if m.group(1) else "", text)


class _RedactedRepr:
    """A dataclass repr that masks secrets (a service's ``extra`` may hold a password)."""

    def __repr__(self) -> str:
        fields = dataclasses.fields(cast(Any, self))
        parts = ", ".join(f"{f.name}={redact(getattr(self, f.name), f.name)!r}" for f in fields)
        return f"{type(self).__name__}({parts})"


@dataclass(frozen=True, repr=False)
class ServiceConfig(_RedactedRepr):
    """One ``server.service`` entry."""

    name: str
    address: str = ""
    protocol: str = ""
    timeout_ms: int | None = None
    """Handler timeout in milliseconds; None: no timeout."""
    filters: tuple[str, ...] = ()
    """Effective filter names: the server-level ``filter`` first, then the service's own."""
    line: int | None = None
    """Line of the entry in the file; None when built in code."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Every other key of the entry (``ip``, ``port``, ``network``, ``registry``...), raw."""
    address_line: int | None = None
    """Line of the ``address:`` value; None when missing or built in code."""


@dataclass(frozen=True, repr=False)
class ServerConfig(_RedactedRepr):
    """The ``server`` section."""

    app: str = ""
    server: str = ""
    filters: tuple[str, ...] = ()
    """Server-level ``filter``: applied to every service, before the service's own."""
    max_close_wait_ms: int = DEFAULT_MAX_CLOSE_WAIT_MS
    services: tuple[ServiceConfig, ...] = ()
    close_wait_ms: int = 0
    timeout_ms: int | None = None
    protocol: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def service(self, name: str) -> ServiceConfig | None:
        for s in self.services:
            if s.name == name:
                return s
        return None


@dataclass(frozen=True, repr=False)
class ClientServiceConfig(_RedactedRepr):
    """One ``client.service`` entry (the config of a client proxy)."""

    name: str
    target: str = ""
    protocol: str = ""
    timeout_ms: int | None = None
    filters: tuple[str, ...] = ()
    """Effective filter names: the client-level ``filter`` first, then the entry's own."""
    line: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    callee: str = ""
    namespace: str = ""
    target_line: int | None = None
    """Line of the ``target:`` value; None when missing or built in code."""


@dataclass(frozen=True, repr=False)
class ClientConfig(_RedactedRepr):
    """The ``client`` section."""

    timeout_ms: int | None = None
    filters: tuple[str, ...] = ()
    services: tuple[ClientServiceConfig, ...] = ()
    namespace: str = ""
    protocol: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, repr=False)
class FileConfig(_RedactedRepr):
    """A loaded configuration file."""

    path: str = ""
    global_: Mapping[str, Any] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    plugins: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other top-level sections, raw."""

    def client_service(self, name: str) -> ClientServiceConfig | None:
        """The ``client.service`` entry for a proxy: matched by ``name``, then by ``callee``."""
        for s in self.client.services:
            if s.name == name:
                return s
        for s in self.client.services:
            if s.callee == name:
                return s
        return None


def load_config(path: str | os.PathLike[str], *, check_addresses: bool = True) -> FileConfig:
    """Read and check a configuration file; raise ConfigError naming file, line and key.

    ``check_addresses=False`` leaves the Kafka addresses to ``kafka_address_errors``.
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("config file is not valid UTF-8", file=file, line=line) from None
    return parse_config(expand_env(text), file=file, check_addresses=check_addresses)


def parse_config(text: str, *, file: str = "<string>", check_addresses: bool = True) -> FileConfig:
    """Parse configuration text (``${NAME}`` already expanded); ``file`` names it in errors.

    Kafka addresses (``server.service[].address`` of protocol kafka, ``client.service[].target``
    of protocol kafka or with ``kafka://``) are parsed here too, so a bad one fails at load.
    """
    data: str | bytes = text
    if _C_LOADER:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from an environment variable
            raise ConfigError(
                f"invalid text: {text[exc.start]!r} is not valid UTF-8 (a lone surrogate; "
                f"from an ${{ENV}} value?)",
                file=file,
                line=text.count("\n", 0, exc.start) + 1,
            ) from None
    loader = _Loader(data)
    # Loading builds many containers and no cycles worth collecting: pausing the cyclic
    # collector halves the time of a large file.
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            root = loader.get_single_node()
            config = _Parser(loader, file, len(text)).file_config(root)
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, file) from None
        except yaml.reader.ReaderError as exc:
            # Its text quotes only the bad character, never the line.
            newline: Any = "\n" if isinstance(data, str) else b"\n"
            raise ConfigError(
                f"invalid YAML: character U+{_code_point(exc.character):04X} is not allowed "
                f"({exc.reason})",
                file=file,
                line=data.count(newline, 0, exc.position) + 1,
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {type(exc).__name__}", file=file) from None
        except RecursionError:
            raise ConfigError("invalid YAML: nested too deeply to load", file=file) from None
        if check_addresses:
            _check_kafka_addresses(config)
    finally:
        loader.dispose()
        if collecting:
            gc.enable()
    return config


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> ConfigError:
    # Built from problem and context only: str(exc) quotes the offending line, which could be a
    # password.
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "syntax error"
    if exc.context:
        problem = f"{exc.context}: {problem}"
        if exc.context_mark is not None and mark is not exc.context_mark:
            problem += f" (started at line {exc.context_mark.line + 1})"
    return ConfigError(
        f"invalid YAML: {problem}", file=file, line=None if mark is None else mark.line + 1
    )


def _dedup(*lists: Iterable[str]) -> tuple[str, ...]:
    # Keeps the first occurrence: section-level filters stay in front, as tRPC-Go's deduplicate.
    return tuple(dict.fromkeys(name for names in lists for name in names))


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "null" if node.tag == _NULL_TAG else "a scalar"


_Entries = dict[str, tuple[Node, Node]]
_Path = tuple[Any, str | int] | None  # (parent path, key or index), spelled by _spell


def _spell(path: _Path) -> str:
    """``server.service[1].timeout`` of a check_tree path."""
    pieces: list[str] = []
    while path is not None:
        path, piece = path
        pieces.append(f"[{piece}]" if isinstance(piece, int) else f".{piece}")
    return "".join(reversed(pieces)).lstrip(".")


_SERVER_KEYS: Final = frozenset(
    (
        "app",
        "server",
        "filter",
        "timeout",
        "protocol",
        "close_wait_time",
        "max_close_wait_time",
        "service",
    )
)
_SERVICE_KEYS: Final = frozenset(("name", "address", "protocol", "timeout", "filter"))
_CLIENT_KEYS: Final = frozenset(("timeout", "filter", "protocol", "namespace", "service"))
_CLIENT_SERVICE_KEYS: Final = frozenset(
    (
        "name",
        "callee",
        "target",
        "protocol",
        "timeout",
        "filter",
        "namespace",
    )
)


class _Parser:
    """Walks the composed node tree so every error can name its line and key path."""

    def __init__(self, loader: yaml.SafeLoader, file: str, size: int = 0) -> None:
        self.loader = loader
        self.file = file
        self.size = size  # characters of the text: bounds alias expansion
        self.aliased = False  # check_tree met a node twice: the file uses aliases

    # -- errors --------------------------------------------------------------------------------

    def fail(
        self, path: str, node: Node | None, problem: str, value: str | None = None
    ) -> ConfigError:
        return ConfigError(
            f"{path}: {problem}" if path else problem,
            key=path or None,
            value=value,
            file=self.file,
            line=None if node is None else _line(node),
        )

    def shown(self, path: str, node: Node) -> tuple[str, str | None]:
        """How a bad value appears in a message (short, secrets hidden), and ConfigError.value."""
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
            return _kind(node), None
        if is_secret_key(path.rsplit(".", 1)[-1]):
            return "a value (hidden: secret key)", None
        text = node.value if len(node.value) <= 60 else node.value[:57] + "..."
        return repr(text), str(node.value)

    # -- primitives ----------------------------------------------------------------------------

    def check_tree(self, root: Node) -> None:
        """Reject a key repeated in one mapping anywhere, as yaml.v3 (tRPC-Go) does, and
        scalars whose tag cannot be built (``!!int abc``), each at its line.

        PyYAML would silently keep the last of a repeated key. Iterative, and key paths are
        only spelled out for an error: a file of 40,000 services is checked in a blink.
        """
        seen: set[int] = set()
        # (node, path) where a path is None or (parent path, key or list index).
        stack: list[tuple[Node, _Path]] = [(root, None)]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:  # an alias: already checked
                self.aliased = True
                continue
            seen.add(id(node))
            if isinstance(node, ScalarNode):
                if node.tag in _FALLIBLE_TAGS:
                    value = self.raw(node, _spell(path))
                    # As yaml.v3: an integer fits 64 bits. A bigger one (0x + 5000 digits)
                    # would not even print (Python's 4300-digit limit).
                    if isinstance(value, int) and value.bit_length() > 64:
                        shown = _shorten(node.value, 40)
                        raise self.fail(
                            _spell(path),
                            node,
                            f"invalid value {shown!r}: an integer of more than 64 bits",
                        )
            elif isinstance(node, MappingNode):
                first: dict[str, Node] = {}
                for key_node, value_node in node.value:
                    sub = path
                    if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                        sub = (path, str(key_node.value))
                        prev = first.setdefault(key_node.value, key_node)
                        if prev is not key_node:
                            raise self.fail(
                                _spell(sub),
                                key_node,
                                f"key defined twice (first at line {_line(prev)})",
                            )
                    # Most values are plain strings: nothing to check, no stack round trip.
                    if value_node.__class__ is not ScalarNode or value_node.tag != _STR_TAG:
                        stack.append((value_node, sub))
            elif isinstance(node, SequenceNode):
                stack.extend((item, (path, i)) for i, item in enumerate(node.value))

    def raw(self, node: Node, path: str = "") -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
            # What the value should be: the tag without its prefix (``int``, ``timestamp``).
            tag = str(node.tag).rsplit(":", 1)[-1]
            shown, raw = self.shown(path, node)
            if isinstance(node, ScalarNode) and len(node.value) > 60:
                shown = f"({len(node.value)} characters)"
            reason = str(exc) if isinstance(exc, TypeError) else f"not a valid {tag}"
            raise self.fail(path, node, f"invalid value {shown}: {_shorten(reason)}", raw) from None

    def check_aliases(self, root: Node) -> None:
        """Refuse recursive aliases (as yaml.v3) and alias bombs, before anything is built."""
        limit = self.size + _ALIAS_EXPANSION_ALLOWANCE
        sizes: dict[int, int] = {}
        open_: set[int] = set()  # nodes whose subtree is being counted
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, finished = stack.pop()
            key = id(node)
            children = _children(node)
            if finished:
                open_.discard(key)
                total = 1 + sum(sizes[id(c)] for c in children)
                if total > limit:
                    raise self.fail(
                        "",
                        node,
                        f"aliases expand to more than {limit} values (an alias bomb?); "
                        f"refused: at most {_ALIAS_EXPANSION_ALLOWANCE} more than the file's "
                        "own values",
                    )
                sizes[key] = total
                continue
            if key in sizes:
                continue
            if key in open_:
                raise self.fail("", node, "an anchor's value contains an alias of itself")
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)

    def mapping(self, node: Node, path: str, what: str = "a mapping") -> _Entries:
        """Key -> (key node, value node), merge keys (``<<``) applied; null is empty."""
        if _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            raise self.fail(path, node, f"must be {what}, got {_kind(node)}")
        entries: _Entries = {}
        pairs = node.value
        # The common case in one pass: every key a plain scalar, no merge key.
        if all(k.__class__ is ScalarNode and k.tag == _STR_TAG for k, _ in pairs):
            return {k.value: (k, v) for k, v in pairs}
        for key_node, value_node in pairs:
            if not isinstance(key_node, ScalarNode):
                raise self.fail(path, key_node, f"keys must be scalars, got {_kind(key_node)}")
            if key_node.tag in _MERGING_TAGS:  # rare: apply ``<<`` and start over
                self.loader.flatten_mapping(node)
                return self.mapping(node, path, what)
            # Later entries win: after flattening, the mapping's own keys follow merged ones.
            entries[str(key_node.value)] = (key_node, value_node)
        return entries

    def string(self, e: _Entries, key: str, path: str) -> str:
        """A string field; any scalar decodes into one as in yaml.v3, with its source text kept
        (``app: 0123`` stays "0123"). Missing or null: ``""``."""
        pair = e.get(key)
        if pair is None:
            return ""
        node = pair[1]
        if node.__class__ is ScalarNode:  # the common case first (40,000 services...)
            return "" if node.tag == _NULL_TAG else str(node.value)
        if _is_null(node):
            return ""
        if not isinstance(node, ScalarNode):
            raise self.fail(f"{path}.{key}", node, f"must be a string, got {_kind(node)}")
        return str(node.value)

    def millis(self, e: _Entries, key: str, path: str) -> int | None:
        """A duration in milliseconds (an int >= 0, as tRPC-Go's ``int`` fields)."""
        node = _value(e, key)
        if node is None or _is_null(node):
            return None
        value = self.raw(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            sub = f"{path}.{key}"
            shown, raw = self.shown(sub, node)
            raise self.fail(
                sub, node, f"must be a whole number of milliseconds >= 0, got {shown}", raw
            )
        return value

    def names(self, e: _Entries, key: str, path: str) -> tuple[str, ...]:
        """A ``filter:`` list: a YAML list of non-empty strings. Missing or null: empty."""
        node = _value(e, key)
        if node is None or _is_null(node):
            return ()
        sub = f"{path}.{key}"
        if not isinstance(node, SequenceNode):
            shown, raw = self.shown(sub, node)
            raise self.fail(
                sub, node, f"must be a list of filter names such as [a, b], got {shown}", raw
            )
        out: list[str] = []
        for i, item in enumerate(node.value):
            if not isinstance(item, ScalarNode) or _is_null(item) or not item.value:
                shown, raw = self.shown(f"{sub}[{i}]", item)
                raise self.fail(f"{sub}[{i}]", item, f"must be a filter name, got {shown}", raw)
            out.append(str(item.value))
        return tuple(out)

    def section(self, e: _Entries, key: str) -> _Entries:
        node = _value(e, key)
        return {} if node is None else self.mapping(node, key)

    def rest(self, e: _Entries, known: frozenset[str]) -> dict[str, Any]:
        """The keys this library does not use, raw: kept so tRPC-Go files load unchanged."""
        if len(e) <= len(known) and known.issuperset(e):  # the common case: nothing else
            return {}
        return {k: self.raw(v) for k, (_, v) in e.items() if k not in known}

    # -- sections ------------------------------------------------------------------------------

    def file_config(self, root: Node | None) -> FileConfig:
        if root is None:  # an empty file: all defaults, as yaml.v3 gives
            return FileConfig(path=self.file)
        self.check_tree(root)
        if self.aliased:
            self.check_aliases(root)
        top = self.mapping(root, "", "a mapping with global, server, client and plugins sections")
        global_ = self.rest(self.section(top, "global"), frozenset())
        return FileConfig(
            path=self.file,
            global_=global_,
            server=self.server(self.section(top, "server")),
            client=self.client(self.section(top, "client"), global_),
            plugins=self.rest(self.section(top, "plugins"), frozenset()),
            extra=self.rest(top, frozenset(("global", "server", "client", "plugins"))),
        )

    def server(self, s: _Entries) -> ServerConfig:
        p = "server"
        filters = self.names(s, "filter", p)
        timeout = self.millis(s, "timeout", p) or None
        protocol = self.string(s, "protocol", p)
        max_wait = self.millis(s, "max_close_wait_time", p)
        services: list[ServiceConfig] = []
        common = _dedup(filters)
        for i, item, e in self.items(s, p):
            sp = f"{p}.service[{i}]"
            own = self.names(e, "filter", sp)
            services.append(
                ServiceConfig(
                    name=self.string(e, "name", sp),
                    address=self.string(e, "address", sp),
                    protocol=self.string(e, "protocol", sp) or protocol,
                    timeout_ms=self.millis(e, "timeout", sp) or timeout,
                    filters=_dedup(filters, own) if own else common,
                    line=_line(item),
                    extra=self.rest(e, _SERVICE_KEYS),
                    address_line=_value_line(e, "address"),
                )
            )
        return ServerConfig(
            app=self.string(s, "app", p),
            server=self.string(s, "server", p),
            filters=filters,
            max_close_wait_ms=DEFAULT_MAX_CLOSE_WAIT_MS if max_wait is None else max_wait,
            services=tuple(services),
            close_wait_ms=self.millis(s, "close_wait_time", p) or 0,
            timeout_ms=timeout,
            protocol=protocol,
            extra=self.rest(s, _SERVER_KEYS),
        )

    def client(self, c: _Entries, global_: Mapping[str, Any]) -> ClientConfig:
        p = "client"
        filters = self.names(c, "filter", p)
        timeout = self.millis(c, "timeout", p) or None
        protocol = self.string(c, "protocol", p)
        namespace = self.string(c, "namespace", p)
        if not namespace and isinstance(global_.get("namespace"), str):
            namespace = global_["namespace"]
        services: list[ClientServiceConfig] = []
        common = _dedup(filters)
        for i, item, e in self.items(c, p):
            sp = f"{p}.service[{i}]"
            name = self.string(e, "name", sp)
            own = self.names(e, "filter", sp)
            services.append(
                ClientServiceConfig(
                    name=name,
                    target=self.string(e, "target", sp),
                    protocol=self.string(e, "protocol", sp) or protocol,
                    timeout_ms=self.millis(e, "timeout", sp) or timeout,
                    filters=_dedup(filters, own) if own else common,
                    line=_line(item),
                    extra=self.rest(e, _CLIENT_SERVICE_KEYS),
                    callee=self.string(e, "callee", sp) or name,
                    namespace=self.string(e, "namespace", sp) or namespace,
                    target_line=_value_line(e, "target"),
                )
            )
        return ClientConfig(
            timeout_ms=timeout,
            filters=filters,
            services=tuple(services),
            namespace=namespace,
            protocol=protocol,
            extra=self.rest(c, _CLIENT_KEYS),
        )

    def items(self, section: _Entries, p: str) -> list[tuple[int, Node, _Entries]]:
        """The entries of ``<p>.service``: a list of mappings, each with a unique ``name``."""
        node = _value(section, "service")
        path = f"{p}.service"
        if node is None or _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.fail(
                path, node, f"must be a list of services (- name: ...), got {_kind(node)}"
            )
        out: list[tuple[int, Node, _Entries]] = []
        first_line: dict[str, int] = {}
        for i, item in enumerate(node.value):
            ip = f"{path}[{i}]"
            if not isinstance(item, MappingNode):
                raise self.fail(ip, item, f"must be a mapping (name: ..., ...), got {_kind(item)}")
            e = self.mapping(item, ip)
            name = self.string(e, "name", ip)
            if not name:
                raise self.fail(
                    f"{ip}.name",
                    item,
                    "missing required key 'name' (the service name, e.g. trpc.app.server.service)",
                )
            name_node = e["name"][1]
            if name in first_line:
                raise self.fail(
                    f"{ip}.name",
                    name_node,
                    f"duplicate service name {name!r}, also at line {first_line[name]}; "
                    "names must be unique",
                    name,
                )
            first_line[name] = _line(name_node)
            out.append((i, item, e))
        return out


def _code_point(character: int | str) -> int:
    # libyaml reports the code point, the pure-Python reader the character.
    return character if isinstance(character, int) else ord(character)


def _value_line(e: _Entries, key: str) -> int | None:
    node = _value(e, key)
    return None if node is None else _line(node)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


KAFKA_PROTOCOL: Final = "kafka"
# A single name (no port, no query): a placeholder such as ``fake_address`` whose config is
# registered in code (register_addr_config), possibly after the file is loaded; it is checked
# when the service starts or the proxy is created.
_PLACEHOLDER: Final = re.compile(r"(kafka://)?[A-Za-z_][\w.\-]*")


def _check_kafka_addresses(config: FileConfig) -> None:
    """Parse every Kafka address of the file now, so a bad one fails at load, at its line."""
    for error in kafka_address_errors(config):
        raise error


def kafka_address_errors(config: FileConfig) -> Iterator[ConfigError]:
    """One ConfigError per bad Kafka address or target of ``config``, in file order.

    Placeholders (``fake_address``) not registered yet are skipped: code fills them in later.
    ``trpc-kafka check`` reports them all; loading a file raises the first.
    """
    # In file order: (address, side, where, key, line), or the error of a missing address.
    found: list[tuple[str, Side, str, str, int | None] | ConfigError] = []
    for i, s in enumerate(config.server.services):
        if s.protocol != KAFKA_PROTOCOL:
            continue
        path = f"server.service[{i}]"
        if not s.address:
            found.append(
                ConfigError(
                    f"{path} {s.name!r}: the 'address' key is missing; a kafka service needs "
                    "host:port[,host:port...]?topics=...&group=...",
                    key=f"{path}.address",
                    file=config.path,
                    line=s.line,
                )
            )
            continue
        where = f"{path} {s.name!r}: address"
        found.append((s.address, "consumer", where, f"{path}.address", s.address_line or s.line))
    for i, c in enumerate(config.client.services):
        if not c.target or (c.protocol != KAFKA_PROTOCOL and not c.target.startswith("kafka://")):
            continue  # without a target, new_client_proxy needs target= or names the entry
        path = f"client.service[{i}]"
        where = f"{path} {c.name!r}: target"
        found.append((c.target, "producer", where, f"{path}.target", c.target_line or c.line))
    for item in found:
        if isinstance(item, ConfigError):
            yield item
            continue
        address, side, where, key, line = item
        error = _address_error(
            address, side=side, where=where, file=config.path, line=line, key=key
        )
        if error is not None:
            yield error


def is_placeholder(address: str) -> bool:
    """Whether ``address`` is a single name whose config code registers (``fake_address``)."""
    return _PLACEHOLDER.fullmatch(address.strip()) is not None


def _address_error(
    address: str, *, side: Side, where: str, file: str, line: int | None, key: str
) -> ConfigError | None:
    if is_placeholder(address) and not is_registered(address):
        return None
    try:
        cfg = resolve_address(address)
    except ConfigError as exc:
        return ConfigError(
            f"{where}: {exc.message}", key=key, value=exc.value, file=file, line=line
        )
    warn_other_side_keys(cfg, side, f"{file}:{line}: {where}")
    return None


def _value(e: _Entries, key: str) -> Node | None:
    pair = e.get(key)
    return None if pair is None else pair[1]


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


# One slot, not a ``global`` statement: set by new_server, read by client proxies.
_loaded: list[FileConfig | None] = [None]


def set_global_config(cfg: FileConfig | None) -> None:
    """Make ``cfg`` the loaded configuration client proxies read (``new_server`` sets it)."""
    _loaded[0] = cfg


def get_global_config() -> FileConfig | None:
    """The configuration set by ``new_server`` or ``set_global_config``, if any."""
    return _loaded[0]


def load_global_config(path: str | os.PathLike[str] | None = None) -> FileConfig:
    """Load a file and make it the global configuration, for programs with client proxies only.

    tRPC-Go clients get theirs from ``trpc.NewServer()``; this is that without a server. The
    path defaults as for ``new_server`` (see :func:`config_path`).
    """
    cfg = load_config(config_path(path))
    set_global_config(cfg)
    return cfg


CONFIG_ENV: Final = "TRPC_KAFKA_CONFIG"


def config_path(path: str | os.PathLike[str] | None = None) -> str | os.PathLike[str]:
    """``path``, else ``$TRPC_KAFKA_CONFIG``, else ``./trpc_python.yaml``."""
    if path is not None:
        return path
    return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
