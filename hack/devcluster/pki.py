"""A throwaway certificate authority and the certificates and kubeconfigs the local cluster needs.

Keys and certificates are created once per state dir and reused, so clients that trust the CA keep
working across `down`/`up`. Kubeconfigs are rewritten on every `up` because the port can change.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)
# Certificates start this long ago, so a clock a little behind still accepts them.
BACKDATE = dt.timedelta(hours=1)
APISERVER_SANS_DNS = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
# 10.0.0.1 is the `kubernetes` Service's ClusterIP, the first address of the service range.
APISERVER_SANS_IP = ["127.0.0.1", "10.0.0.1"]


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate; `name` is the file stem and, where it has one, the kubeconfig's stem."""

    name: str
    common_name: str
    organizations: list[str] = field(default_factory=list)
    kubeconfig: bool = True


CLIENTS = [
    ClientIdentity("admin", "kubetune-admin", ["system:masters"]),
    ClientIdentity("kube-controller-manager", "system:kube-controller-manager"),
    ClientIdentity("kube-scheduler", "system:kube-scheduler"),
    # The node agent registers Nodes, updates any pod's status and reads Secrets/ConfigMaps for any
    # pod; an admin-level identity keeps it simple where the real Node authorizer is not set up.
    ClientIdentity("nodeagent", "kubetune-node-agent", ["system:masters"]),
    # The apiserver presents this to the node agent's HTTPS endpoint for `kubectl logs`/`exec`.
    ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"], False),
    # The aggregation layer's identity towards extension apiservers; publishing a request-header CA
    # also spares the controller-manager and scheduler a stream of "missing CA bundle" errors.
    ClientIdentity("front-proxy-client", "front-proxy-client", [], False),
    # Kueue and JobSet run with admin rights too: their upstream ClusterRoles are long and follow
    # each release, and nothing here tests their RBAC.
    ClientIdentity("kueue", "kubetune-kueue", ["system:masters"]),
    ClientIdentity("jobset", "kubetune-jobset", ["system:masters"]),
]
# Serving certificates (SANs: 127.0.0.1, localhost and the `kubernetes.default…` names) by file stem.
# `webhook` is presented by Kueue's and JobSet's webhook servers, which the apiserver calls by URL.
SERVERS = {"apiserver": "kube-apiserver", "webhook": "kubetune-webhook"}


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(
    key: PrivateKeyTypes, fmt: serialization.PrivateFormat = serialization.PrivateFormat.TraditionalOpenSSL
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def certificate(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    *,
    validity: dt.timedelta = VALIDITY,
    backdate: dt.timedelta = BACKDATE,
) -> x509.Certificate:
    """The kit's one certificate builder: the subject's public key signed by the issuer's key (SHA-256),
    valid from `backdate` ago for `validity`, with the (extension, critical) pairs in order."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + validity)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A serving certificate for `name` and 127.0.0.1, signed by its own key, made once in `directory`:
    the node agent's log endpoint presents it, and the apiserver does not verify it unless told a
    kubelet CA."""
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    sans = [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = certificate(
        subject,
        key.public_key(),
        subject,
        key,
        [(x509.SubjectAlternativeName(sans), False)],
        validity=dt.timedelta(days=365),
        backdate=dt.timedelta(minutes=5),
    )
    key_path.write_bytes(_key_pem(key, serialization.PrivateFormat.PKCS8))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def ensure(self) -> bool:
        """Create whatever is missing; returns True when anything was created."""
        # A new CA makes every certificate signed by an old one useless, so all are issued again.
        new_ca = not (self.ca_cert.exists() and self.ca_key.exists())
        if new_ca:
            self._create_ca()
        created = new_ca
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        for stem, common_name in SERVERS.items():
            if new_ca or not self.cert(stem).exists():
                self._issue(ca_cert, ca_key, stem, _name(common_name), server=True)
                created = True
        for client in CLIENTS:
            if new_ca or not self.cert(client.name).exists():
                self._issue(ca_cert, ca_key, client.name, _name(client.common_name, client.organizations))
                created = True
        if not (self.sa_key.exists() and self.sa_pub.exists()):
            key = _new_key()
            _write_private(self.sa_key, _key_pem(key))
            self.sa_pub.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            created = True
        return created

    def _create_ca(self) -> None:
        key = _new_key()
        name = _name("kubetune-devcluster-ca")
        cert = certificate(
            name,
            key.public_key(),
            name,
            key,
            [
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True),
                (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
            ],
        )
        _write_private(self.ca_key, _key_pem(key))
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        ca_cert: x509.Certificate,
        ca_key: rsa.RSAPrivateKey,
        stem: str,
        subject: x509.Name,
        server: bool = False,
    ) -> None:
        key = _new_key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True, key_encipherment=True), True),
            (x509.ExtendedKeyUsage([usage]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ]
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in APISERVER_SANS_DNS]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in APISERVER_SANS_IP]
            extensions.append((x509.SubjectAlternativeName(sans), False))
        cert = certificate(subject, key.public_key(), ca_cert.subject, ca_key, extensions)
        _write_private(self.key(stem), _key_pem(key))
        self.cert(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def kubeconfig(self, user: str, server: str) -> str:
        """A self-contained kubeconfig (certificates embedded) for one client identity."""

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubetune-dev",
                    "cluster": {"server": server, "certificate-authority-data": b64(self.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(self.cert(user)),
                        "client-key-data": b64(self.key(user)),
                    },
                }
            ],
            "contexts": [{"name": "kubetune-dev", "context": {"cluster": "kubetune-dev", "user": user}}],
            "current-context": "kubetune-dev",
        }
        return yaml.safe_dump(config, sort_keys=False)

    def write_kubeconfig(self, path: Path, user: str, server: str) -> None:
        _write_private(path, self.kubeconfig(user, server).encode())
