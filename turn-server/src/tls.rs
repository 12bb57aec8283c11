//! The TLS listeners' rustls configuration: a certificate chain and key
//! from PEM files, or a self-signed development certificate made with
//! rcgen. The crypto provider is aws-lc-rs, the workspace's one crypto
//! library; it is passed explicitly, so no process-wide default is needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::config::TlsSection;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("cannot read TLS certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or parsed.
    #[error("cannot read TLS key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (typically: the key is not the certificate's).
    #[error("TLS key {key} does not fit certificate {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls' reason.
        reason: String,
    },
    /// TLS listeners but neither certificate nor development certificate.
    #[error("TLS listeners need tls.cert and tls.key, or tls.dev_cert = true")]
    NoCertificate,
    /// rcgen or rustls failed on the development certificate.
    #[error("cannot make the development certificate: {0}")]
    DevCert(String),
}

/// A ready TLS server configuration and the chain it serves.
#[derive(Clone)]
pub struct TlsSetup {
    /// Shared by every connection of every worker.
    pub config: Arc<ServerConfig>,
    /// The certificate chain served, leaf first (clients of a development
    /// certificate trust its leaf).
    pub chain: Vec<CertificateDer<'static>>,
    /// True for a generated self-signed certificate.
    pub dev: bool,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("chain_len", &self.chain.len())
            .field("dev", &self.dev)
            .finish()
    }
}

/// The crypto provider every TLS object of the relay uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the configuration for `listeners` from `section`: the files if
/// given, else a development certificate if asked, else an error.
pub fn setup(section: &TlsSection, listeners: &[SocketAddr]) -> Result<TlsSetup, TlsError> {
    match (&section.cert, &section.key) {
        (Some(cert), Some(key)) => from_files(cert, key),
        _ if section.dev_cert => dev_setup(listeners),
        _ => Err(TlsError::NoCertificate),
    }
}

/// Loads a PEM certificate chain and private key.
pub fn from_files(cert: &Path, key: &Path) -> Result<TlsSetup, TlsError> {
    let cert_err = |reason: String| TlsError::Certificate {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: pem_reason(&e),
    })?;
    let config = build(chain.clone(), private).map_err(|e| TlsError::Mismatch {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(TlsSetup {
        config,
        chain,
        dev: false,
    })
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM block of the expected kind in the file".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// A self-signed certificate (ECDSA P-256) for `listeners`' addresses
/// (wildcards become the loopback addresses) and `localhost`.
pub fn dev_setup(listeners: &[SocketAddr]) -> Result<TlsSetup, TlsError> {
    let mut names = vec!["localhost".to_string()];
    for addr in listeners {
        let ips: &[IpAddr] = match addr.ip() {
            ip if !ip.is_unspecified() => &[ip],
            IpAddr::V4(_) => &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            IpAddr::V6(_) => &[
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ],
        };
        for ip in ips {
            let name = ip.to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::DevCert(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::DevCert(e.to_string()))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "turn-server development certificate",
    );
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::DevCert(e.to_string()))?;
    let chain = vec![cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = build(chain.clone(), private).map_err(|e| TlsError::DevCert(e.to_string()))?;
    Ok(TlsSetup {
        config,
        chain,
        dev: true,
    })
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // TURN has no ALPN of its own (RFC 7443 "stun.turn" is optional) and no
    // use for resumption across workers' restarts; keep the defaults else.
    config.alpn_protocols = Vec::new();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("turn-tls-{}-{name}", rand::random::<u64>()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn pem_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_files_and_reports_bad_ones() {
        let (cert_pem, key_pem) = pem_pair();
        let cert = temp("cert.pem", &cert_pem);
        let key = temp("key.pem", &key_pem);
        let ok = from_files(&cert, &key).unwrap();
        assert_eq!(ok.chain.len(), 1);
        assert!(!ok.dev);

        let missing = Path::new("/nonexistent/cert.pem");
        let e = from_files(missing, &key).unwrap_err().to_string();
        assert!(
            e.contains("cannot read TLS certificate /nonexistent/cert.pem"),
            "{e}"
        );
        let e = from_files(&cert, missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read TLS key /nonexistent/cert.pem"),
            "{e}"
        );

        // A key file given as certificate and the other way round.
        let e = from_files(&key, &key).unwrap_err().to_string();
        assert!(e.contains("cannot read TLS certificate"), "{e}");
        let e = from_files(&cert, &cert).unwrap_err().to_string();
        assert!(e.contains("cannot read TLS key"), "{e}");

        // Another certificate's key.
        let (_, other_key) = pem_pair();
        let other = temp("other.pem", &other_key);
        let e = from_files(&cert, &other).unwrap_err().to_string();
        assert!(e.contains("does not fit certificate"), "{e}");

        let garbage = temp("garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
        let e = from_files(&garbage, &key).unwrap_err().to_string();
        assert!(e.contains("cannot read TLS certificate"), "{e}");
        for p in [cert, key, other, garbage] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Handshakes a rustls client trusting `setup`'s leaf, asking for
    /// `name`, with a server on `setup`, in memory.
    fn handshake(setup: &TlsSetup, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(setup.chain[0].clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name)?;
        let mut server = rustls::ServerConnection::new(setup.config.clone())?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut back).unwrap();
            }
            client.read_tls(&mut back.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn dev_certificate_names_listeners() {
        let listeners = [
            "192.0.2.1:443".parse().unwrap(),
            "[::]:5349".parse().unwrap(),
        ];
        let setup = dev_setup(&listeners).unwrap();
        assert!(setup.dev);
        for name in ["localhost", "192.0.2.1", "::1", "127.0.0.1"] {
            handshake(&setup, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(handshake(&setup, "example.com").is_err());
        assert!(handshake(&setup, "192.0.2.2").is_err());
        let section = TlsSection::default();
        assert!(matches!(
            setup_or_err(&section),
            Err(TlsError::NoCertificate)
        ));
        let dev = TlsSection {
            dev_cert: true,
            ..TlsSection::default()
        };
        assert!(setup_or_err(&dev).is_ok_and(|s| s.dev));
    }

    fn setup_or_err(section: &TlsSection) -> Result<TlsSetup, TlsError> {
        setup(section, &[])
    }
}
