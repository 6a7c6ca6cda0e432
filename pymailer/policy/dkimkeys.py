"""
DKIM signing keys on disk, and the DNS records that publish them.

Layout: one directory per domain, one file per key::

    data_dir/dkim/                       0700
    data_dir/dkim/example.org/           0700 (the domain in A-label form)
    data_dir/dkim/example.org/s202607.rsa.key           0600, PEM (PKCS#1)
    data_dir/dkim/example.org/s202607-ed25519.ed25519.key  0600, PEM (PKCS#8)

A file's name is C{<selector>.<type>.key}: the selector exactly as it goes
into DNS (C{<selector>._domainkey.<domain>}) and into C{s=}, and the key type
(C{rsa} or C{ed25519}).  The layout does not depend on how selectors are
chosen, so an administrator can import a key made elsewhere by dropping a
PEM file in with the right name (RSA keys in PKCS#1 or PKCS#8 form).

Selector scheme of L{generateKeys}: one DNS name holds one key record, so
the RSA and the Ed25519 key of one generation need two selectors.  For a
base selector C{S}, the RSA key is C{S} and the Ed25519 key is
C{S-ed25519}.  The default base selector is C{s} + year + month
(L{defaultSelector}, e.g. C{s202607}), so that generating a new key a year
later makes new selectors beside the old ones: rotation without a gap.

Every key present is used for signing (L{loadSigningKeys}): while rotating,
old and new keys both sign until the old files are removed; a receiver needs
only one signature to verify.  Publish the printed records before mail goes
out: until then our signatures fail at receivers with "no key".

Blocking file I/O throughout: the server calls this from a thread pool.
"""

from __future__ import annotations

import base64
import os
import pathlib
import re
import threading
import time
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pymailer.auth.directory import normaliseDomain
from pymailer.fsutil import fsyncDirectory, writeDurably

__all__ = [
    "SigningKey",
    "KeyExistsError",
    "KeyFileError",
    "ALGORITHMS",
    "RSA_BITS",
    "dnsDomain",
    "checkSelector",
    "defaultSelector",
    "selectorsFor",
    "keyDirectory",
    "generateKeys",
    "loadSigningKeys",
    "publicKeyRecord",
    "dnsRecord",
    "zoneTXT",
]

# Key type (file name, DNS k= tag) -> DKIM signature algorithm (a= tag).
ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
_KEY_TYPES = {v: k for k, v in ALGORITHMS.items()}

# RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use 2048.
RSA_BITS = 2048
_MIN_RSA_BITS = 1024

ED25519_SUFFIX = "-ed25519"

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
# RFC 6376 §3.1: selector = sub-domain *( "." sub-domain ), sub-domain as in
# RFC 5321 (letters, digits, hyphens inside).
_SELECTOR_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class SigningKey(NamedTuple):
    """
    One private key, ready for L{pymailer.policy.dkim.sign}.

    @ivar selector: the DNS selector (C{s=}).
    @ivar algorithm: C{"rsa-sha256"} or C{"ed25519-sha256"} (C{a=}).
    @ivar privateKey: C{bytes} in the form dkimpy takes: PKCS#1 PEM for RSA,
        the base64 of the 32-byte seed for Ed25519 (RFC 8463 §3).
    """

    selector: str
    algorithm: str
    privateKey: bytes


class KeyExistsError(ValueError):
    """A key for this selector exists already (and C{force} was not given)."""

    def __init__(self, path):
        ValueError.__init__(self, f"a DKIM key exists already: {path}")
        self.path = path


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file."""


# --- names -----------------------------------------------------------------

def dnsDomain(domain: str) -> str:
    """
    A domain as it appears in DNS and in C{d=}: lower case, no trailing dot,
    IDNA A-labels (RFC 6376 §3.5: d= is in A-label form for IDNs).

    @raise ValueError: not a usable domain name (also anything that could
        escape the key directory: the result is a path component).
    """
    name = normaliseDomain(domain)
    try:
        ascii = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid domain {domain!r}") from None
    ascii = ascii.lower()
    labels = ascii.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"invalid domain {domain!r}")
    return ascii


def checkSelector(selector: str) -> str:
    """
    @return: the selector, lower-cased.
    @raise ValueError: not a valid selector (RFC 6376 §3.1).
    """
    s = selector.lower() if isinstance(selector, str) else ""
    if (not s or len(s) > 200
            or not all(_SELECTOR_LABEL.match(label) for label in s.split("."))):
        raise ValueError(
            f"invalid DKIM selector {selector!r} (letters, digits and inner"
            " hyphens, dot-separated)")
    return s


def defaultSelector(now: float | None = None) -> str:
    """The default base selector: C{s} + year + month, e.g. C{s202607}."""
    return time.strftime("s%Y%m", time.gmtime(time.time() if now is None else now))


def selectorsFor(selector: str) -> dict[str, str]:
    """
    The selectors of one key generation: C{{"rsa": S, "ed25519":
    S-ed25519}}.  One DNS name holds one key record (RFC 6376 §3.6.2.2), so
    the two keys need two names.
    """
    s = checkSelector(selector)
    return {"rsa": s, "ed25519": checkSelector(s + ED25519_SUFFIX)}


def keyDirectory(dataDir, domain: str) -> pathlib.Path:
    """C{data_dir/dkim/<domain in A-label form>}."""
    return pathlib.Path(dataDir) / "dkim" / dnsDomain(domain)


def _keyPath(directory, selector, keyType):
    return directory / f"{selector}.{keyType}.key"


# --- generating ------------------------------------------------------------

def _makeDirectory(path):
    """mkdir -p with 0700 for what we create, fsyncing the parents."""
    path = pathlib.Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
        else:
            fsyncDirectory(p.parent)


def _pem(keyType, key):
    if keyType == "rsa":
        # PKCS#1 ("BEGIN RSA PRIVATE KEY"): the form dkimpy parses.
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    else:
        fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt,
                             serialization.NoEncryption())


def generateKeys(dataDir, domain: str, selector: str | None = None,
                 force: bool = False) -> list[SigningKey]:
    """
    Make an RSA (2048-bit) and an Ed25519 key for C{domain} and store them
    (0600, written atomically and fsynced) under
    C{data_dir/dkim/<domain>/}, with the selectors of L{selectorsFor}.

    @param selector: the base selector; default L{defaultSelector}.
    @param force: replace existing keys of these selectors.
    @return: the new keys, RSA first.
    @raise KeyExistsError: a key file of these selectors exists and
        C{force} is false; nothing is written.
    @raise ValueError: invalid domain or selector.
    """
    if selector is None:
        selector = defaultSelector()
    selectors = selectorsFor(selector)
    directory = keyDirectory(dataDir, domain)
    if not force:
        for keyType, s in selectors.items():
            path = _keyPath(directory, s, keyType)
            if path.exists():
                raise KeyExistsError(path)
    _makeDirectory(directory)
    keys = []
    for keyType, s, private in newKeys(selector):
        writeDurably(str(_keyPath(directory, s, keyType)),
                     _pem(keyType, private), mode=0o600)
        keys.append(SigningKey(s, ALGORITHMS[keyType], _dkimpyForm(keyType, private)))
    fsyncDirectory(directory)
    return keys


def newKeys(selector: str):
    """
    A new RSA (L{RSA_BITS}) and Ed25519 private key, with their selectors
    (L{selectorsFor}): C{[(keyType, selector, private key)]}, RSA first.
    """
    made = []
    for keyType, s in selectorsFor(selector).items():
        if keyType == "rsa":
            private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        made.append((keyType, s, private))
    return made


def pemOf(keyType, private) -> bytes:
    """The PEM a key file holds (PKCS#1 for RSA, PKCS#8 for Ed25519)."""
    return _pem(keyType, private)


def keyFiles(dataDir):
    """
    Every key file under C{data_dir/dkim}: C{[(domain, selector, keyType,
    path)]} (what C{pymailer migrate-storage} moves into PostgreSQL).
    """
    root = pathlib.Path(dataDir) / "dkim"
    found = []
    try:
        domains = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    for domain in domains:
        if (root / domain).is_dir():
            found += [(domain, selector, keyType, path)
                      for selector, keyType, path in sorted(_keyFiles(root / domain))]
    return found


# --- loading ---------------------------------------------------------------

def _dkimpyForm(keyType, private):
    if keyType == "rsa":
        return _pem("rsa", private)
    # RFC 8463 §3: the 32-byte seed; dkimpy wants it base64-encoded.
    seed = private.private_bytes(serialization.Encoding.Raw,
                                 serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return base64.b64encode(seed)


def _loadKey(path, keyType):
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror or e}") from None
    return parseKey(data, keyType, path)


def parseKey(data, keyType, where):
    """
    The private key in C{data} (PEM), checked to be of C{keyType}.

    @param where: what names the key in an error (a file, a database row).
    @raise KeyFileError: not a usable key.
    """
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{where}: not an unencrypted PEM private key ({e})") from None
    if keyType == "rsa":
        if not isinstance(private, rsa.RSAPrivateKey):
            raise KeyFileError(f"{where}: not an RSA key")
        if private.key_size < _MIN_RSA_BITS:
            raise KeyFileError(f"{where}: RSA key of {private.key_size} bits"
                               f" (RFC 8301 needs at least {_MIN_RSA_BITS})")
    elif not isinstance(private, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{where}: not an Ed25519 key")
    return private


def dkimpyForm(keyType, private):
    """A parsed key in the form L{SigningKey.privateKey} holds."""
    return _dkimpyForm(keyType, private)


def _keyFiles(directory):
    """C{[(selector, keyType, path)]} of the key files in C{directory}."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        for keyType in ALGORITHMS:
            suffix = f".{keyType}.key"
            if name.endswith(suffix):
                selector = name[:-len(suffix)]
                try:
                    checkSelector(selector)
                except ValueError:
                    continue  # Not ours (a temporary file, an editor's backup).
                found.append((selector, keyType, directory / name))
    return found


# Parsed keys by path, valid while the file's (inode, mtime, size) stay:
# loading a 2048-bit RSA key (cryptography checks it) costs ~30 ms, too
# much per message.  A replaced file (keygen --force renames a new one in)
# has a new inode, so it is read again.
_cache = {}
_cacheLock = threading.Lock()


def _cachedKey(path, keyType):
    try:
        st = os.stat(path)
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror or e}") from None
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _cacheLock:
        cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    key = _dkimpyForm(keyType, _loadKey(path, keyType))
    with _cacheLock:
        _cache[path] = (stamp, key)
    return key


def loadSigningKeys(dataDir, domain: str) -> list[SigningKey]:
    """
    Every key stored for C{domain}: RSA keys first (RFC 8463 §4: not every
    verifier knows Ed25519, so RSA stays), each type sorted by selector.

    Cheap enough to call per message: one directory listing and a stat per
    key file; files are parsed again only when they change.

    @return: C{[]} when the domain has no keys.
    @raise KeyFileError: a key file is unreadable or not a usable key.
    @raise ValueError: an invalid domain.
    """
    directory = keyDirectory(dataDir, domain)
    files = _keyFiles(directory)
    order = list(ALGORITHMS)
    files.sort(key=lambda f: (order.index(f[1]), f[0]))
    return [
        SigningKey(selector, ALGORITHMS[keyType], _cachedKey(path, keyType))
        for selector, keyType, path in files
    ]


def sortKeys(keys):
    """RSA keys first (RFC 8463 §4), each type by selector."""
    order = list(ALGORITHMS.values())
    return sorted(keys, key=lambda k: (order.index(k.algorithm), k.selector))


# --- where the keys are: files, or the shared database ---------------------

def _sharedKeys(config):
    """The PostgreSQL key store of C{config}, or C{None} for the key files."""
    if config.storage.backend != "postgresql":
        return None
    from pymailer.pg import dkimkeys as pgKeys
    from pymailer.pg.pool import poolFor

    return pgKeys.PostgreSQLKeys(poolFor(config.storage))


def signingKeys(config, domain: str) -> list[SigningKey]:
    """
    The keys the server signs C{domain}'s mail with: the key files under
    C{data_dir/dkim} (L{loadSigningKeys}), or with C{[storage] backend =
    "postgresql"} the keys every node shares in the database.
    """
    shared = _sharedKeys(config)
    if shared is None:
        return loadSigningKeys(config.data_dir, domain)
    return shared.load(domain)


def generateKeysFor(config, domain: str, selector: str | None = None,
                    force: bool = False):
    """
    L{generateKeys} where C{config} keeps its keys.

    @return: C{(keys, where)}: the new keys and where they are (for people).
    """
    shared = _sharedKeys(config)
    if shared is None:
        keys = generateKeys(config.data_dir, domain, selector, force)
        return keys, str(keyDirectory(config.data_dir, domain))
    return shared.generate(domain, selector or defaultSelector(), force), "the database"


# --- DNS records -----------------------------------------------------------

def publicKeyRecord(key: SigningKey) -> str:
    """
    The TXT record content for C{key}: C{v=DKIM1; k=rsa; p=...} (RFC 6376
    §3.6.1) or C{v=DKIM1; k=ed25519; p=...} (RFC 8463 §4.2).
    """
    keyType = _KEY_TYPES.get(key.algorithm)
    if keyType == "rsa":
        private = serialization.load_pem_private_key(key.privateKey, password=None)
        # The SubjectPublicKeyInfo DER, as every signer publishes it
        # (RFC 6376 §3.6.1 allows it; dkimpy and OpenDKIM read both forms).
        public = private.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
    elif keyType == "ed25519":
        private = ed25519.Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(key.privateKey))
        # RFC 8463 §4.2: p= is the bare 32-byte public key, base64.
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise ValueError(f"unknown DKIM algorithm {key.algorithm!r}")
    p = base64.b64encode(public).decode("ascii")
    return f"v=DKIM1; k={keyType}; p={p}"


def zoneTXT(text: str) -> str:
    """
    TXT record data in zone-file form: quoted character-strings of at most
    255 bytes each (RFC 1035 §3.3.14), on one line; a resolver joins them
    again without separators (RFC 6376 §3.6.2.2, RFC 7208 §3.3).
    """
    raw = text.encode("ascii")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    quoted = []
    for chunk in chunks:
        s = chunk.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{s}"')
    return " ".join(quoted)


def dnsRecord(domain: str, key: SigningKey) -> str:
    """
    The zone-file line publishing C{key}:
    C{SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..." "..."}.
    """
    return (f"{key.selector}._domainkey.{dnsDomain(domain)}. IN TXT "
            f"{zoneTXT(publicKeyRecord(key))}")
