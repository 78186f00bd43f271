//! Apple's notifications end to end: the stand-in notifies the server when events
//! finish, so installs start without waiting for the next poll; the server checks the
//! bearer secret and counts a notification once; without notifications, polling still
//! gets there.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use orchard_testbed::harness::{AdminClient, DEMO_LOCATION, Testbed, TestbedBuilder};
use serde_json::json;

const PAGES: u64 = 361309726;

async fn finished_events_are_notified_and_acted_on_at_once(builder: TestbedBuilder) {
    // Polling alone would take a minute.
    let bed = builder
        .event_poll(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    bed.apple.set_event_delay(Duration::from_millis(800));
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(3, Duration::from_secs(600)).await.unwrap();
    let started = Instant::now();
    let app = bed
        .assign_required(PAGES, &fleet.udids(), "Notified")
        .await
        .unwrap();
    bed.wait_installed(&app, 3, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "acted on the notification, not the 60 s poll: {:?}",
        started.elapsed()
    );
    let sent = bed.apple.with_world(|w| w.notifications_sent);
    assert!(sent >= 1, "{sent} notifications");
    let (_, view) = bed.admin.get(&format!("/v1/tokens/{token}")).await.unwrap();
    assert!(view["last_notification_at"].is_string(), "{view}");

    // The endpoint checks the secret and counts each notification once.
    let secret = bed.apple.with_world(|w| {
        w.locations[DEMO_LOCATION]
            .notification_token
            .clone()
            .unwrap()
    });
    let url = format!("/apple/notifications/{token}");
    let notification = json!({ "notification": {}, "notificationId": "n-1", "notificationType": "TEST_NOTIFICATION", "uId": DEMO_LOCATION });
    let apple = AdminClient::new(&bed.server.url, &bed.server.ca_pem, &secret).unwrap();
    let (status, first) = apple.post(&url, notification.clone()).await.unwrap();
    assert_eq!(
        (status.as_u16(), first["duplicate"].as_bool()),
        (200, Some(false))
    );
    let (status, again) = apple.post(&url, notification.clone()).await.unwrap();
    assert_eq!(
        (status.as_u16(), again["duplicate"].as_bool()),
        (200, Some(true))
    );
    let forged = apple.with_token("not-the-secret");
    let (status, body) = forged.post(&url, notification).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = apple.post(&url, json!({ "no": "envelope" })).await.unwrap();
    assert_eq!(status, 422, "{body}");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn without_notifications_polling_still_gets_there(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.apple.with_world(|w| w.drop_notifications = true);
    bed.apple.set_event_delay(Duration::from_millis(500));
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(2, Duration::from_secs(600)).await.unwrap();
    let app = bed
        .assign_required(PAGES, &fleet.udids(), "Polled")
        .await
        .unwrap();
    bed.wait_installed(&app, 2, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(bed.apple.with_world(|w| w.notifications_sent), 0);
    fleet.stop().await;
    bed.shutdown().await;
}

/// The stand-in's record of where it notifies the demo location.
fn notification_url(bed: &orchard_testbed::harness::Testbed) -> Option<String> {
    bed.apple.with_world(|w| {
        w.locations
            .get(DEMO_LOCATION)
            .and_then(|l| l.notification_url.clone())
    })
}

async fn unreachable_server_claims_without_notifications_and_polls(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    // Apple cannot reach this server (the stand-in trusts another CA, so its TLS
    // connection fails as a firewall would make it): its test notification fails, 9728.
    let elsewhere = bed.apple.ca_pem.clone();
    bed.apple
        .with_world(|w| w.notification_ca = Some(elsewhere));
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let (_, view) = bed.admin.get(&format!("/v1/tokens/{token}")).await.unwrap();
    let note = view["notifications"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("off: Apple could not reach") && note.contains("9728"),
        "{view}"
    );
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(notification_url(&bed), None, "claimed without a URL");
    // Polling gets the devices there.
    let fleet = bed.enroll_fleet(3, Duration::from_secs(600)).await.unwrap();
    let app = bed
        .assign_required(PAGES, &fleet.udids(), "Polled")
        .await
        .unwrap();
    bed.wait_installed(&app, 3, Duration::from_secs(30))
        .await
        .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

async fn notifications_on_refuse_an_unreachable_url_and_off_never_asks(builder: TestbedBuilder) {
    use orchard_server::state::NotificationMode;
    let strict = builder
        .apple_notifications(NotificationMode::On)
        .start()
        .await
        .unwrap();
    let elsewhere = strict.apple.ca_pem.clone();
    strict
        .apple
        .with_world(|w| w.notification_ca = Some(elsewhere));
    let err = strict.upload_and_sync_demo_token().await.unwrap_err();
    assert!(format!("{err:#}").contains("9728"), "{err:#}");
    strict.shutdown().await;

    let off = Testbed::builder()
        .apple_notifications(NotificationMode::Off)
        .start()
        .await
        .unwrap();
    let token = off.upload_and_sync_demo_token().await.unwrap();
    let (_, view) = off.admin.get(&format!("/v1/tokens/{token}")).await.unwrap();
    assert!(
        view["notifications"]
            .as_str()
            .is_some_and(|n| n.starts_with("off: turned off")),
        "{view}"
    );
    assert_eq!(notification_url(&off), None, "Apple was never given a URL");
    let (status, _) = off
        .admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "syncs again without claiming with a URL");
    assert_eq!(notification_url(&off), None);
    off.shutdown().await;
}

orchard_testbed::on_both_backends!(
    unreachable_server_claims_without_notifications_and_polls,
    notifications_on_refuse_an_unreachable_url_and_off_never_asks,
    finished_events_are_notified_and_acted_on_at_once,
    without_notifications_polling_still_gets_there,
);
