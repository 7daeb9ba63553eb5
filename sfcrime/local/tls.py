"""A private CA and a broker certificate for the local secured broker, as PEM files (Kafka reads PEM with
`ssl.keystore.type=PEM`): made once in the broker's data folder, readable by the owner only."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

CA_FILE = "ca.pem"
BROKER_FILE = "broker.pem"  # the broker's private key and certificate chain, one file


def write_private(path: Path, data: bytes | str) -> None:
    """Owner-only from the start (mode 600): a key, or a file that holds a password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, 0o600)


def make_certificates(folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """(CA certificate, broker key+chain) in folder, made unless both exist. The broker certificate names
    every host clients may dial (localhost, 127.0.0.1, ...), so hostname verification stays on."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_path, broker_path = folder / CA_FILE, folder / BROKER_FILE
    if ca_path.exists() and broker_path.exists():
        return ca_path, broker_path
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5), not_valid_after=now + datetime.timedelta(days=825))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfcrime local CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    write_private(broker_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
             + cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    write_private(ca_path, ca_cert.public_bytes(pem))
    return ca_path, broker_path
