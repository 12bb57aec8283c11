//! QUIC/TLS configuration of the trunk: a fresh self-signed certificate per
//! process and a client that accepts any certificate, because peers are
//! authenticated by the cluster secret bound to the TLS session
//! (`trunk/auth.rs`), not by a PKI. TLS 1.3 only, aws-lc-rs (the
//! workspace's one crypto library), ALPN `sfu-trunk/1`.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// ALPN protocol of the trunk.
pub const ALPN: &[u8] = b"sfu-trunk/1";
/// Server name the dialer puts in its ClientHello (the certificate is not checked).
pub const SERVER_NAME: &str = "sfu-trunk";

/// Why the trunk's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("trunk TLS setup: {0}")]
pub struct TlsSetupError(String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Keep-alives and an idle timeout so a dead peer is noticed within 5 s;
/// datagrams on (quinn's default buffers: the oldest datagram is dropped
/// when the send buffer is full).
pub fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    // 5 s always converts to a VarInt.
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(5)) {
        t.max_idle_timeout(Some(idle));
    }
    t.datagram_send_buffer_size(1 << 20);
    t.datagram_receive_buffer_size(Some(1 << 20));
    Arc::new(t)
}

/// The accepting side: a self-signed P-256 certificate made now.
pub fn server_config() -> Result<quinn::ServerConfig, TlsSetupError> {
    let err = |e: &dyn std::fmt::Display| TlsSetupError(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e))?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| err(&e))?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], private)
        .map_err(|e| err(&e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| err(&e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The dialling side.
pub fn client_config() -> Result<quinn::ClientConfig, TlsSetupError> {
    let err = |e: &dyn std::fmt::Display| TlsSetupError(e.to_string());
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| err(&e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// Accepts any certificate but still checks that the peer holds its key
/// (the handshake signature), which keeps the exporter bound to the peer
/// that completed this handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not used on the trunk".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
