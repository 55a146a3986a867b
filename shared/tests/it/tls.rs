//! TLS to a real service: a Redis started by this test with a CA and certificate it
//! generates, reached over `rediss://` through rustls with the extra CA, and refused
//! without it.

use crate::helpers;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use settle_shared::ports::kv::{KeyValueStore, RedisKv};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    settle_shared::tls::install_crypto_provider();
    // Arrange: a private CA and a server certificate for localhost.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Settle test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let dir = std::env::temp_dir().join(helpers::unique("settle-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_path, cert_path, key_path) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, server_cert.pem()).unwrap();
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();

    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert_path)
        .arg("--tls-key-file")
        .arg(&key_path)
        .args(["--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| helpers::unreachable("redis-server (binary)", e));
    let _server = Server(child);
    let url = format!("rediss://localhost:{port}");
    let extra_ca = settle_shared::tls::read_extra_ca(&ca_path).unwrap();

    // Act: wait for the server, then talk to it over TLS.
    let store = KeyValueStore::Redis(RedisKv::new(&url, Some(&extra_ca), Duration::from_secs(2)).unwrap());
    let mut ready = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "TLS Redis did not answer on {url}");
    store.set("tls-key", b"over tls", None).await.unwrap();
    assert_eq!(store.get("tls-key").await.unwrap().as_deref(), Some(&b"over tls"[..]));

    // Assert: without the private CA the certificate is rejected.
    let untrusted = KeyValueStore::Redis(RedisKv::new(&url, None, Duration::from_secs(2)).unwrap());
    assert!(untrusted.ping().await.is_err(), "a certificate from an unknown CA must be refused");
    std::fs::remove_dir_all(&dir).ok();
}
