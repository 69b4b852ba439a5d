//! Mutual TLS between processes: a two-process chain (front -> recall) with
//! `[process.tls]` answers over mTLS; a plaintext client and a client whose
//! certificate another CA signed are refused; replacing the certificate
//! files (a new CA, certificate and key) takes effect without a restart.
//! The CA and certificates are made here, at test time.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Proc;
use proxy_api::pb::business_client::BusinessClient;
use proxy_api::tls::{ClientTls, Material, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA of its own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    /// A certificate for `127.0.0.1` and `localhost`, good for serving and
    /// for calling (every pod both serves and calls): (cert PEM, key PEM).
    fn leaf(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` (a fresh leaf) into `dir`,
    /// each replaced in one rename, as a secret volume update does.
    fn write(&self, dir: &Path, name: &str) {
        let (cert, key) = self.leaf(name);
        for (file, text) in [
            ("ca.pem", self.issuer.pem()),
            ("cert.pem", cert),
            ("key.pem", key),
        ] {
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, dir.join(file)).expect("rename");
        }
    }
}

/// The `[process.tls]` section for the files in `dir`.
fn tls_toml(dir: &Path) -> String {
    let f = |name: &str| dir.join(name).display().to_string();
    format!(
        "[process.tls]\nenabled = true\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nreload_interval_ms = 100\n",
        f("cert.pem"),
        f("key.pem"),
        f("ca.pem")
    )
}

fn front_toml(listen: SocketAddr, recall: SocketAddr, dir: &Path) -> String {
    format!(
        "[process]\nlisten = \"{listen}\"\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\ndrain_ms = 0\n\n\
         [remote.recall]\nendpoints = [\"http://{recall}\"]\nhealth_interval_ms = 100\n\n{}",
        tls_toml(dir)
    )
}

fn recall_toml(listen: SocketAddr, dir: &Path) -> String {
    format!(
        "[process]\nlisten = \"{listen}\"\nhost = [\"recall\"]\ndrain_ms = 0\n\n{}",
        tls_toml(dir)
    )
}

/// A test client's TLS from the files in `dir` (no reloading).
fn client_tls(dir: &Path) -> ClientTls {
    let f = |name: &str| dir.join(name).display().to_string();
    let config = TlsConfig {
        enabled: true,
        cert_file: f("cert.pem"),
        key_file: f("key.pem"),
        ca_file: f("ca.pem"),
        reload_interval_ms: 3_600_000,
        ..TlsConfig::default()
    };
    ClientTls::new(Material::load(&config, "client").expect("client files")).expect("client tls")
}

/// One GetFeed on a new connection made with `tls`.
async fn feed_over(
    addr: SocketAddr,
    tls: &ClientTls,
) -> Result<proxy_api::pb::GetFeedResponse, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tls.connector())
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let case = &common::cases(1)[0];
    let mut request = common::request(case, 0);
    request.set_timeout(Duration::from_secs(5));
    BusinessClient::new(channel)
        .get_feed(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{s:?}"))
}

/// Waits (bounded) until `tls` gets a page from `addr`.
async fn wait_feed(addr: SocketAddr, tls: &ClientTls, procs: &[&Proc]) {
    let started = Instant::now();
    loop {
        match feed_over(addr, tls).await {
            Ok(page) if !page.items.is_empty() => return,
            other => assert!(
                started.elapsed() < Duration::from_secs(60),
                "no page over mTLS: {other:?}\n{}",
                procs
                    .iter()
                    .map(|p| p.log())
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_over_mtls_refuses_strangers_and_follows_rotation() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = secrets.path().to_owned();
    let ca = Ca::new("tandem test CA");
    ca.write(&dir, "feeds");

    let (front_addr, recall_addr) = (common::free_addr(), common::free_addr());
    let recall = Proc::start("recall", recall_addr, &recall_toml(recall_addr, &dir));
    let front = Proc::start(
        "front",
        front_addr,
        &front_toml(front_addr, recall_addr, &dir),
    );

    // Served over mTLS end to end: the page needs front -> recall too.
    let trusted = client_tls(&dir);
    wait_feed(front_addr, &trusted, &[&front, &recall]).await;

    // Plaintext is refused: no answer on either process.
    for addr in [front_addr, recall_addr] {
        assert_eq!(
            common::health(addr, "").await,
            None,
            "{addr} answered plaintext"
        );
    }
    let plaintext = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{front_addr}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let case = &common::cases(1)[0];
        BusinessClient::new(channel)
            .get_feed(common::request(case, 0))
            .await
            .ok()
    };
    assert!(
        plaintext.await.is_none(),
        "a plaintext GetFeed was answered"
    );

    // A client that trusts the CA but whose certificate another CA signed.
    let stranger_dir = tempfile::tempdir().expect("tempdir");
    Ca::new("someone else's CA").write(stranger_dir.path(), "stranger");
    std::fs::copy(dir.join("ca.pem"), stranger_dir.path().join("ca.pem")).expect("copy CA");
    let stranger = client_tls(stranger_dir.path());
    let refused = feed_over(front_addr, &stranger).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA was accepted"
    );

    // Rotation: a new CA, certificate and key replace the files. Without a
    // restart, new connections are served with the new certificate (a
    // client trusting only the new CA gets a page, presenting a certificate
    // only the new CA signed), and the old ones are no longer accepted.
    let rotated_ca = Ca::new("tandem test CA, rotated");
    rotated_ca.write(&dir, "feeds");
    let rotated = client_tls(&dir);
    wait_feed(front_addr, &rotated, &[&front, &recall]).await;
    assert_eq!(
        health_over(recall_addr, &rotated).await,
        Some(common::SERVING),
        "recall does not serve with the rotated files"
    );
    let old = feed_over(front_addr, &trusted).await;
    assert!(
        old.is_err(),
        "the old CA's client is still accepted: {old:?}"
    );
    assert_eq!(health_over(recall_addr, &trusted).await, None);
}

/// Health of `addr` asked over a new connection made with `tls`.
async fn health_over(addr: SocketAddr, tls: &ClientTls) -> Option<i32> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tls.connector())
        .await
        .ok()?;
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.set_timeout(Duration::from_secs(2));
    HealthClient::new(channel)
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status)
}
