//! Test 5: a wrong server certificate and a missing client certificate are
//! refused; the spool keeps everything.

use std::sync::Arc;
use std::time::Duration;

use picket_uplink::sample;
use picket_uplink::{ConfigError, Spool, SpoolConfig, UplinkError};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};

use crate::common::{device_identity, uplink_config, wait_until_async, Broker, Pki, ServerCert};

fn spool_with_one_alert(dir: &std::path::Path) -> Spool {
    let spool = Spool::open_with(SpoolConfig::new(dir.join("spool"), 1 << 20)).unwrap();
    let s = sample::process_alert(0, sample::id_for(6, 0));
    spool.push(s.new_alert(&s.payload().unwrap())).unwrap();
    spool.flush().unwrap();
    spool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    // The broker presents a certificate for the right name from a rogue CA.
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Rogue);
    let spool = spool_with_one_alert(dir.path());
    let config = uplink_config(&pki, broker.tls_port, device_identity(dir.path()));
    let uplink = picket_uplink::Uplink::new(config, spool.clone()).unwrap();
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));
    wait_until_async("three refused attempts", Duration::from_secs(30), || {
        stats.snapshot().uplink.connection_errors_total >= 3
    })
    .await;
    let snap = stats.snapshot();
    assert_eq!(snap.uplink.connects_total, 0, "{snap:?}");
    assert_eq!(snap.uplink.batches_sent_total, 0);
    let err = snap.uplink.last_error.unwrap_or_default();
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    assert_eq!(snap.spool.depth, 1, "the alert stays spooled");
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_server_is_accepted_and_a_wrong_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
    // The certificate names 127.0.0.1 and localhost, not this name.
    let spool = spool_with_one_alert(dir.path());
    let mut config = uplink_config(&pki, broker.tls_port, device_identity(dir.path()));
    config.broker_host = "127.0.0.2".into();
    let uplink = picket_uplink::Uplink::new(config.clone(), spool.clone()).unwrap();
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));
    wait_until_async("refused attempts", Duration::from_secs(30), || {
        stats.snapshot().uplink.connection_errors_total >= 2
    })
    .await;
    assert_eq!(stats.snapshot().uplink.connects_total, 0);
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    // The same broker under its own name: accepted, and the alert delivered.
    config.broker_host = "localhost".into();
    let uplink = picket_uplink::Uplink::new(config, spool.clone()).unwrap();
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));
    wait_until_async("delivery", Duration::from_secs(30), || {
        stats.snapshot().spool.depth == 0
    })
    .await;
    assert!(stats.snapshot().uplink.connects_total >= 1);
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_certificate_is_refused_by_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);

    // A TLS 1.3 client that trusts the fleet CA but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut o = MqttOptions::new("no-cert", "127.0.0.1", broker.tls_port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    let (_client, mut eventloop) = AsyncClient::new(o, 4);
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the broker answers in time");
    let err = outcome.expect_err("a client without certificate must be refused");
    eprintln!("refused as expected: {err}");

    // And the uplink itself cannot be configured without one.
    let spool = spool_with_one_alert(dir.path());
    let mut config = uplink_config(&pki, broker.tls_port, device_identity(dir.path()));
    config.client_cert_pem = Vec::new();
    assert!(matches!(
        picket_uplink::Uplink::new(config, spool),
        Err(UplinkError::Config(ConfigError::Tls { .. }))
    ));
}

/// WIRE.md §6 allows the device identity key (Ed25519) to serve as the mTLS
/// client key: a certificate for that very key is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_identity_key_works_as_the_client_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);
    let identity = device_identity(dir.path());
    let pkcs8 = std::fs::read(dir.path().join("device.key25519")).unwrap();
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let (cert_pem, key_pem) = pki.issue_client(&key, &identity.device_id().to_string());

    let spool = spool_with_one_alert(dir.path());
    let mut config = uplink_config(&pki, broker.tls_port, identity);
    config.client_cert_pem = cert_pem.into_bytes();
    config.client_key_pem = key_pem.into_bytes();
    let uplink = picket_uplink::Uplink::new(config, spool.clone()).unwrap();
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));
    wait_until_async("delivery", Duration::from_secs(30), || {
        stats.snapshot().spool.depth == 0
    })
    .await;
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}
