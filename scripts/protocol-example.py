#!/usr/bin/env python3
"""Protocol v1 worked example, computed by a second, independent implementation.

docs/protocol.md shows the bytes of one exchange (challenge binding, HPKE info, the sealed
key and its opening). This script derives them with Python's `cryptography` package
(X25519, HKDF, AES-GCM) and a from-scratch RFC 9180 key schedule, not with the project's
C++ code; test/unit/protocol_test.cpp checks that the C++ code produces the same bytes.
Before printing, the script checks its HPKE code against RFC 9180 Appendix A.1.1.

Run: python3 scripts/protocol-example.py   (Debian: python3-cryptography)
"""
import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization

KEM_X25519_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES128_GCM = 0x0001
AEAD_AES256_GCM = 0x0002


def i2osp(value, length):
    return value.to_bytes(length, "big")


def hkdf_extract(salt, ikm):
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def labeled_extract(suite, salt, label, ikm):
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite, prk, label, info, length):
    return hkdf_expand(prk, i2osp(length, 2) + b"HPKE-v1" + suite + label + info, length)


def raw_public(private_key):
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encap(sk_e, pk_r):
    """DHKEM(X25519, HKDF-SHA256) Encap with a given ephemeral key: (shared_secret, enc)."""
    kem_suite = b"KEM" + i2osp(KEM_X25519_SHA256, 2)
    dh = sk_e.exchange(X25519PublicKey.from_public_bytes(pk_r))
    enc = raw_public(sk_e)
    eae_prk = labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + pk_r, 32), enc


def key_schedule(shared_secret, info, aead_id):
    suite = b"HPKE" + i2osp(KEM_X25519_SHA256, 2) + i2osp(KDF_HKDF_SHA256, 2) + i2osp(aead_id, 2)
    key_size = 16 if aead_id == AEAD_AES128_GCM else 32
    context = (b"\x00" + labeled_extract(suite, b"", b"psk_id_hash", b"")
               + labeled_extract(suite, b"", b"info_hash", info))
    secret = labeled_extract(suite, shared_secret, b"secret", b"")
    return (labeled_expand(suite, secret, b"key", context, key_size),
            labeled_expand(suite, secret, b"base_nonce", context, 12))


def seal(sk_e, pk_r, info, aad, plaintext, aead_id=AEAD_AES256_GCM):
    shared_secret, enc = encap(sk_e, pk_r)
    key, nonce = key_schedule(shared_secret, info, aead_id)
    return enc, AESGCM(key).encrypt(nonce, plaintext, aad)


def self_check():
    """RFC 9180 A.1.1, base mode, sequence 0."""
    h = bytes.fromhex
    sk_e = X25519PrivateKey.from_private_bytes(h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736"))
    pk_r = h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    enc, ct = seal(sk_e, pk_r, h("4f6465206f6e2061204772656369616e2055726e"), h("436f756e742d30"),
                   h("4265617574792069732074727574682c20747275746820626561757479"), AEAD_AES128_GCM)
    assert enc.hex() == "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431"
    assert ct.hex() == ("f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
                        "6d8770ac83d07bea87e13c512a")


def main():
    self_check()
    image_id = "web-01"
    nonce = bytes(range(64))                                   # a verifier would issue this
    agent_key = X25519PrivateKey.from_private_bytes(bytes([0x11] * 32))   # E, the agent's ephemeral key
    verifier_ephemeral = X25519PrivateKey.from_private_bytes(bytes([0x22] * 32))
    disk_key = bytes(range(0x40, 0x80))                        # 64 bytes, the LUKS volume key
    e_public = raw_public(agent_key)
    binding = hashlib.sha512(b"virtcca-fde/v1" + nonce + e_public).digest()
    info = b"virtcca-fde/v1 key" + b"\x00" + image_id.encode() + b"\x00" + nonce
    enc, sealed = seal(verifier_ephemeral, e_public, info, b"", disk_key)
    # The agent's side: open with E's private key.
    dh_open = agent_key.exchange(verifier_ephemeral.public_key())
    kem_suite = b"KEM" + i2osp(KEM_X25519_SHA256, 2)
    shared_secret = labeled_expand(kem_suite, labeled_extract(kem_suite, b"", b"eae_prk", dh_open),
                                   b"shared_secret", enc + e_public, 32)
    key, base_nonce = key_schedule(shared_secret, info, AEAD_AES256_GCM)
    assert AESGCM(key).decrypt(base_nonce, sealed, b"") == disk_key
    for name, value in [("image_id", image_id.encode()), ("nonce", nonce),
                        ("agent ephemeral private (E)", bytes([0x11] * 32)), ("ephemeral_public (E.public)", e_public),
                        ("challenge binding", binding), ("hpke info", info),
                        ("verifier HPKE ephemeral private", bytes([0x22] * 32)), ("disk key", disk_key),
                        ("shared_secret", shared_secret), ("aead key", key), ("aead base_nonce", base_nonce),
                        ("enc", enc), ("sealed_key", sealed)]:
        print(f"{name:32} {value.hex()}")


if __name__ == "__main__":
    main()
