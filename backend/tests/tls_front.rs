//! The mTLS front with real TLS over real sockets, in front of an echo
//! server standing in for the broker.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use picket_backend::pki::{FleetCa, IssuedCert, Revocations};
use picket_backend::tls_front::{Refusal, TlsFront, TlsFrontOptions, TlsFrontStats};
use picket_proto::ed25519_dalek::SigningKey;
use picket_proto::DeviceId;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const DEADLINE: Duration = Duration::from_secs(10);

struct Fixture {
    _dir: tempfile::TempDir,
    ca: FleetCa,
    revocations: Revocations,
    front: TlsFront,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn fixture(options: TlsFrontOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let revocations = Revocations::new();
    let config = ca
        .server_config(&["localhost".to_owned()], &revocations)
        .unwrap();
    let front = TlsFront::with_options(config, echo_server().await, revocations.clone(), options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn({
        let front = front.clone();
        async move { front.serve(listener, shutdown).await }
    });
    Fixture {
        _dir: dir,
        ca,
        revocations,
        front,
        addr,
        _stop: stop,
    }
}

fn device(seed: u8) -> (SigningKey, DeviceId) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    (key.clone(), DeviceId::from_public_key(&key.verifying_key()))
}

fn builder(
    trusted: &FleetCa,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.ca_der().clone()).unwrap();
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
}

/// The appliance's client: its ed25519 identity key (PKCS#8, as
/// `picket_proto::identity` stores it) with the issued certificate.
fn device_client(trusted: &FleetCa, key: &SigningKey, cert: &IssuedCert) -> Arc<ClientConfig> {
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(key.as_bytes());
    Arc::new(
        builder(trusted)
            .with_client_auth_cert(vec![cert.der.clone()], PrivateKeyDer::Pkcs8(pkcs8.into()))
            .unwrap(),
    )
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(DEADLINE, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Writes `msg` and expects it echoed back.
async fn echo(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(buf, msg);
}

/// The connection ends (EOF or error) without echoing anything.
async fn refused<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("read {n} bytes from a refused connection"),
        Err(_) => panic!("connection still open"),
    }
}

async fn wait_for<F: Fn() -> bool>(what: &str, cond: F) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_stats<F: Fn(&TlsFrontStats) -> bool>(front: &TlsFront, what: &str, cond: F) {
    wait_for(what, || cond(&front.stats())).await;
}

async fn with_deadline<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.expect("deadline")
}

#[tokio::test]
async fn enrolled_device_gets_through_to_the_broker() {
    let f = fixture(TlsFrontOptions::default()).await;
    let (key, id) = device(1);
    let cert =
        f.ca.issue_device_cert(&id, key.verifying_key().as_bytes(), None)
            .unwrap();
    let mut s = connect(f.addr, device_client(&f.ca, &key, &cert))
        .await
        .unwrap();
    echo(&mut s, b"MQTT CONNECT").await;
    assert_eq!(f.front.connections_of(&id), 1);
    let stats = f.front.stats();
    assert_eq!(stats.handshakes_total, 1);
    assert_eq!(stats.active, 1);
    assert_eq!(stats.refused_total(), 0);
    drop(s);
    wait_stats(&f.front, "connection end", |s| s.active == 0).await;
    assert_eq!(f.front.connections_of(&id), 0);
    assert!(f
        .front
        .metrics_text()
        .contains("picket_tls_front_handshakes_total 1"));
}

#[tokio::test]
async fn clients_without_a_valid_fleet_certificate_are_refused() {
    let f = fixture(TlsFrontOptions::default()).await;
    let (key, id) = device(2);

    // No client certificate: TLS 1.3 lets the client finish first; the
    // server's refusal arrives on the first read.
    let config = Arc::new(builder(&f.ca).with_no_client_auth());
    if let Ok(mut s) = connect(f.addr, config).await {
        let _ = s.write_all(b"hello").await;
        refused(&mut s).await;
    }
    wait_stats(&f.front, "no-cert refusal", |s| {
        s.refused(Refusal::NoCertificate) == 1
    })
    .await;

    // A certificate from another CA.
    let other_dir = tempfile::tempdir().unwrap();
    let other = FleetCa::load_or_create(other_dir.path()).unwrap();
    let foreign = other
        .issue_device_cert(&id, key.verifying_key().as_bytes(), None)
        .unwrap();
    if let Ok(mut s) = connect(f.addr, device_client(&f.ca, &key, &foreign)).await {
        let _ = s.write_all(b"hello").await;
        refused(&mut s).await;
    }
    wait_stats(&f.front, "foreign-CA refusal", |s| {
        s.refused(Refusal::BadCertificate) == 1
    })
    .await;

    // A client pinning another CA refuses the server itself.
    let good =
        f.ca.issue_device_cert(&id, key.verifying_key().as_bytes(), None)
            .unwrap();
    let err = connect(f.addr, device_client(&other, &key, &good))
        .await
        .unwrap_err();
    // The other CA has the same subject, so webpki reports a bad signature.
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    wait_stats(&f.front, "pin refusal", |s| s.refused_total() == 3).await;
    assert_eq!(f.front.stats().handshakes_total, 0);
}

#[tokio::test]
async fn revoked_certificates_are_refused_and_live_connections_dropped() {
    let f = fixture(TlsFrontOptions::default()).await;
    let (key, id) = device(3);
    let cert =
        f.ca.issue_device_cert(&id, key.verifying_key().as_bytes(), None)
            .unwrap();
    let client = device_client(&f.ca, &key, &cert);

    let mut live = connect(f.addr, client.clone()).await.unwrap();
    echo(&mut live, b"before").await;
    let mut second = connect(f.addr, client.clone()).await.unwrap();
    echo(&mut second, b"second").await;

    // Revocation: the set first (new handshakes), then the live connections.
    f.revocations.revoke(id, Some(&cert.serial_hex), 0);
    assert_eq!(f.front.disconnect(&id), 2);
    with_deadline(refused(&mut live)).await;
    with_deadline(refused(&mut second)).await;
    assert_eq!(f.front.stats().disconnected_total, 2);

    if let Ok(mut s) = connect(f.addr, client).await {
        let _ = s.write_all(b"after").await;
        refused(&mut s).await;
    }
    wait_stats(&f.front, "revoked refusal", |s| {
        s.refused(Refusal::Revoked) == 1
    })
    .await;
    wait_stats(&f.front, "no live connection", |s| s.active == 0).await;
}

#[tokio::test]
async fn a_stalled_handshake_times_out_without_blocking_others() {
    let f = fixture(TlsFrontOptions {
        handshake_timeout: Duration::from_millis(300),
        ..TlsFrontOptions::default()
    })
    .await;
    // Slow loris: connects, sends half a ClientHello, then nothing.
    let mut loris = TcpStream::connect(f.addr).await.unwrap();
    loris
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    wait_stats(&f.front, "loris accepted", |s| s.handshaking == 1).await;

    let (key, id) = device(4);
    let cert =
        f.ca.issue_device_cert(&id, key.verifying_key().as_bytes(), None)
            .unwrap();
    let mut s = connect(f.addr, device_client(&f.ca, &key, &cert))
        .await
        .unwrap();
    echo(&mut s, b"not blocked").await;

    wait_stats(&f.front, "loris timeout", |s| {
        s.refused(Refusal::Timeout) == 1
    })
    .await;
    with_deadline(refused(&mut loris)).await;
    echo(&mut s, b"still fine").await;
}

#[tokio::test]
async fn many_concurrent_connections_and_shutdown() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let ca = FleetCa::load_or_create(dir.path()).unwrap();
    let revocations = Revocations::new();
    let config = ca
        .server_config(&["localhost".to_owned()], &revocations)
        .unwrap();
    let front = TlsFront::new(config, echo_server().await, revocations);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn({
        let front = front.clone();
        async move { front.serve(listener, shutdown).await }
    });

    let (key, id) = device(5);
    let cert = ca
        .issue_device_cert(&id, key.verifying_key().as_bytes(), None)
        .unwrap();
    let client = device_client(&ca, &key, &cert);
    let mut handles = Vec::new();
    for i in 0..N {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let mut s = connect(addr, client).await.unwrap();
            echo(&mut s, format!("conn {i}").as_bytes()).await;
            s
        }));
    }
    let mut streams = Vec::new();
    for h in handles {
        streams.push(h.await.unwrap());
    }
    assert_eq!(front.stats().active, N as u64);
    assert_eq!(front.connections_of(&id), N);

    // The backend's own client certificate (not a device) also gets through.
    let mut backend = connect(addr, ca.client_config_for_backend().unwrap())
        .await
        .unwrap();
    echo(&mut backend, b"backend").await;

    stop.send(true).unwrap();
    with_deadline(server).await.unwrap();
    for s in &mut streams {
        with_deadline(refused(s)).await;
    }
    with_deadline(refused(&mut backend)).await;
    wait_stats(&front, "all closed", |s| s.active == 0).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
