//! Apple's notifications end to end: the stand-in notifies the server when events
//! finish, so installs start without waiting for the next poll; the server checks the
//! bearer secret and counts a notification once; without notifications, polling still
//! gets there.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use orchard_testbed::harness::{AdminClient, DEMO_LOCATION, TestbedBuilder};
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

orchard_testbed::on_both_backends!(
    finished_events_are_notified_and_acted_on_at_once,
    without_notifications_polling_still_gets_there,
);
