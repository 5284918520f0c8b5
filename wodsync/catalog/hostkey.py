"""Checking a pinned SSH host key the way the SSH transport will read it, without paramiko.

A host file pins `<type> <base64>`. A key that only looks right (a typo in the base64, a key
pasted under the wrong type, a truncated line) used to validate and then crash `plan` inside
paramiko with a traceback. Here the blob is parsed in SSH wire format (RFC 4253 §6.6, RFC 5656
§3.1, RFC 8709): the embedded type must equal the declared one and the key material must be
well formed, so such a key is a located error in the pull request. Standard library only:
importing paramiko costs more than the whole validation of a catalog.
"""

from __future__ import annotations

import base64
import binascii
import struct

# Short Weierstrass curves y² = x³ - 3x + b (mod p) of the NIST ECDSA host key types.
_CURVES: dict[str, tuple[int, int]] = {
    "nistp256": (2**256 - 2**224 + 2**192 + 2**96 - 1,
                 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B),
    "nistp384": (2**384 - 2**128 - 2**96 + 2**32 - 1,
                 int("B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
                     "C656398D8A2ED19D2A85C8EDD3EC2AEF", 16)),
    "nistp521": (2**521 - 1,
                 int("0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
                     "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00", 16)),
}
MIN_RSA_BITS = 1024


class InvalidHostKey(ValueError):
    """The pinned key is not a well-formed public key of its declared type (a catalog error;
    a key that does not match the host's is `engine.transport.HostKeyError`)."""


class _Reader:
    """Sequential reader of SSH wire-format fields."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0

    def string(self, what: str) -> bytes:
        if self.pos + 4 > len(self.blob):
            raise InvalidHostKey(f"the key ends before its {what}")
        (size,) = struct.unpack_from(">I", self.blob, self.pos)
        start = self.pos + 4
        if start + size > len(self.blob):
            raise InvalidHostKey(f"the key is truncated inside its {what}")
        self.pos = start + size
        return self.blob[start:self.pos]

    def mpint(self, what: str) -> int:
        data = self.string(what)
        if data and data[0] & 0x80:
            raise InvalidHostKey(f"the {what} is negative")
        return int.from_bytes(data, "big")

    def end(self) -> None:
        if self.pos != len(self.blob):
            raise InvalidHostKey(f"{len(self.blob) - self.pos} unexpected bytes after the key")


def _ed25519(reader: _Reader) -> None:
    if len(reader.string("public key")) != 32:
        raise InvalidHostKey("an ssh-ed25519 public key is 32 bytes")


def _rsa(reader: _Reader) -> None:
    e = reader.mpint("exponent")
    n = reader.mpint("modulus")
    if n.bit_length() < MIN_RSA_BITS:
        raise InvalidHostKey(f"the RSA modulus has {n.bit_length()} bits; at least "
                           f"{MIN_RSA_BITS} are needed")
    if e < 3 or e % 2 == 0 or e >= n or n % 2 == 0:
        raise InvalidHostKey("the RSA exponent and modulus do not form a public key")


def _ecdsa(reader: _Reader, curve: str) -> None:
    named = reader.string("curve name")
    if named != curve.encode():
        raise InvalidHostKey(f"the key names curve {named.decode('ascii', 'replace')!r}, "
                           f"its type says {curve!r}")
    p, b = _CURVES[curve]
    size = (p.bit_length() + 7) // 8
    point = reader.string("public point")
    if len(point) != 1 + 2 * size or point[0] != 4:
        raise InvalidHostKey(f"the public point is not an uncompressed {curve} point")
    x = int.from_bytes(point[1:1 + size], "big")
    y = int.from_bytes(point[1 + size:], "big")
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + b)) % p:
        raise InvalidHostKey(f"the public point is not on curve {curve}")


def check_host_key(value: str) -> None:
    """Raise `InvalidHostKey` unless `value` (`<type> <base64>`) is a well-formed public key."""
    key_type, _, data = value.partition(" ")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidHostKey("the key is not valid base64 (truncated or mistyped?)") from None
    reader = _Reader(blob)
    embedded = reader.string("type name")
    if embedded != key_type.encode():
        raise InvalidHostKey(f"the key is of type {embedded.decode('ascii', 'replace')!r}, "
                           f"not {key_type!r} as written before it")
    if key_type == "ssh-ed25519":
        _ed25519(reader)
    elif key_type == "ssh-rsa":
        _rsa(reader)
    elif key_type.startswith("ecdsa-sha2-") and key_type[len("ecdsa-sha2-"):] in _CURVES:
        _ecdsa(reader, key_type[len("ecdsa-sha2-"):])
    else:
        raise InvalidHostKey(f"unsupported host key type {key_type!r}")
    reader.end()
