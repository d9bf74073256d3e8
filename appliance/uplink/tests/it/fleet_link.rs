//! The fleet link: frames the backend publishes for this device (a retained
//! bundle announcement, commands) reach the appliance, and its
//! acknowledgements reach the backend's topics.

use std::time::Duration;

use picket_proto::topic::{self, Channel};
use picket_uplink::{Downlink, FleetLink, Spool, SpoolConfig, Uplinked};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::common::{device_identity, uplink_config, Broker, Pki, ServerCert};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_announcements_come_down_and_acknowledgements_go_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"));
    let identity = device_identity(dir.path());
    let device = identity.device_id();
    let broker = Broker::start(&pki, &dir.path().join("broker"), ServerCert::Fleet);

    // the backend side: a retained announcement before the device connects
    let mut o = MqttOptions::new("backend", "127.0.0.1", broker.plain_port);
    o.set_max_packet_size(262_144, 262_144);
    let (backend, mut events) = AsyncClient::new(o, 16);
    let acks_topic = topic::topic(device, Channel::Acks).to_string();
    backend
        .subscribe(acks_topic.as_str(), QoS::AtLeastOnce)
        .await
        .unwrap();
    backend
        .publish(
            topic::topic(device, Channel::BundleAnnounce).as_str(),
            QoS::AtLeastOnce,
            true,
            b"announce v7".to_vec(),
        )
        .await
        .unwrap();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::channel(4);
    let backend_task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == acks_topic => {
                    let _ = acked_tx.send(p.payload.to_vec()).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });

    let spool = Spool::open_with(SpoolConfig::new(dir.path().join("spool"), 1 << 24)).unwrap();
    let (down_tx, mut down_rx) = tokio::sync::mpsc::channel(8);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(8);
    let uplink = picket_uplink::Uplink::new(uplink_config(&pki, broker.tls_port, identity), spool)
        .unwrap()
        .with_fleet_link(FleetLink {
            downlink: down_tx,
            outbox: out_rx,
        });
    let stats = uplink.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async {
        let _ = stop_rx.await;
    }));

    let got = tokio::time::timeout(Duration::from_secs(10), down_rx.recv())
        .await
        .expect("the retained announcement arrives")
        .unwrap();
    assert_eq!(
        got,
        Downlink {
            channel: Channel::BundleAnnounce,
            payload: b"announce v7".to_vec()
        }
    );
    // a command published while connected
    backend
        .publish(
            topic::topic(device, Channel::Commands).as_str(),
            QoS::AtLeastOnce,
            false,
            b"ping".to_vec(),
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), down_rx.recv())
        .await
        .expect("the command arrives")
        .unwrap();
    assert_eq!(got.channel, Channel::Commands);

    out_tx
        .send(Uplinked {
            channel: Channel::Acks,
            payload: b"ack v7 active".to_vec(),
        })
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), acked_rx.recv())
        .await
        .expect("the ack arrives")
        .unwrap();
    assert_eq!(ack, b"ack v7 active");
    let s = stats.snapshot().uplink;
    assert_eq!(s.downlink_received_total, 2);
    assert_eq!(s.fleet_dropped_total, 0);

    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
    backend_task.abort();
}
