//! The web console in a real browser: Debian's chromium, driven through chromedriver
//! (WebDriver) over loopback, against a server with enrolled agents. Sign in with an
//! admin token, upload and sync a VPP token, create a group of the enrolled devices,
//! assign an app and watch its page reach "installed" for every device without
//! reloading; an auditor is not offered the assign form and the server refuses it when
//! posted anyway; a form without its CSRF token is refused. Screenshots land in
//! `target/console-screenshots/` (and in `docs/` with `ORCHARD_UPDATE_SCREENSHOTS=1`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use orchard_testbed::harness::{DEMO_LOCATION, Testbed, free_port};
use reqwest::StatusCode;
use serde_json::json;

/// chromedriver and a headless chromium session; the driver stops with it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and a session, or says why it cannot (in CI, a failure).
async fn browser() -> Option<Browser> {
    let missing = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .into_iter()
        .find(|p| !std::path::Path::new(p).exists());
    if let Some(path) = missing {
        let reason = format!("{path} is not installed (apt-get install chromium chromium-driver)");
        if std::env::var("CI").is_ok() {
            panic!("the browser tests need chromium in CI: {reason}");
        }
        eprintln!("skipping the browser test: {reason}");
        return None;
    }
    let port = free_port().expect("a free port").port();
    let driver = tokio::process::Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a profile directory");
    let caps = json!({
        "browserName": "chrome",
        // The server's certificate is from its own CA, which this throwaway profile
        // does not know; TLS itself is real.
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    });
    let caps = caps.as_object().cloned().expect("capabilities");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => {
                return Some(Browser {
                    client,
                    _driver: driver,
                    _profile: profile,
                });
            }
            Err(e) if Instant::now() > deadline => panic!("chromedriver did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The page's text; empty while the browser is between pages (the body found may be
/// gone before its text is read).
async fn text_of(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the page's text contains `what`.
async fn wait_text(client: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = text_of(client).await;
        if text.contains(what) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    std::fs::write(dir.join(name), &png).expect("screenshot");
    if std::env::var("ORCHARD_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(root.join("docs").join(name), &png).expect("docs screenshot");
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn choose(client: &Client, css: &str, value: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
}

async fn type_into(client: &Client, css: &str, text: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}

/// A console session outside the browser: signs in with `token` and returns the
/// session cookie (for requests a browser would never make).
async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> String {
    // Posted without the form's login cookie, a sign-in is refused.
    let answer = http
        .post(format!("{base}/console/login"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(&[("token", token)]))
        .send()
        .await
        .expect("sign-in");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let form_page = http
        .get(format!("{base}/console/login"))
        .send()
        .await
        .expect("the sign-in form");
    let login = form_page
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a login cookie")
        .to_owned();
    let html = form_page.text().await.expect("html");
    let at = html.find("name=\"login\" value=\"").expect("a login nonce") + 20;
    let nonce = html[at..].split('"').next().unwrap_or_default().to_owned();
    let answer = http
        .post(format!("{base}/console/login"))
        .header("cookie", login)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(&[("token", token), ("login", &nonce)]))
        .send()
        .await
        .expect("sign-in");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookie = answer
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap_or_default().to_owned()
}

/// A urlencoded form body.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("https://form.invalid/").expect("url");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

fn csrf_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_assigns_an_app_in_the_console_and_watches_it_install_live() {
    let bed = Testbed::builder().start().await.expect("testbed");
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let fleet = bed
        .enroll_fleet(4, Duration::from_millis(500))
        .await
        .expect("fleet");
    let base = bed.server.url.clone();

    // Signed out, the console sends you to its sign-in form.
    c.goto(&format!("{base}/console")).await.expect("console");
    assert!(
        c.current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/console/login")
    );
    type_into(c, "input[name=token]", "not-a-token").await;
    click(c, "button[type=submit]").await;
    wait_text(c, "That token is not valid").await;
    type_into(c, "input[name=token]", &bed.admin_token()).await;
    click(c, "button[type=submit]").await;
    wait_text(c, "No VPP token yet.").await;

    // Upload the location's token file and sync it.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("headquarters.vpptoken");
    std::fs::write(
        &file,
        bed.apple.token_file(DEMO_LOCATION).expect("token file"),
    )
    .expect("write");
    type_into(
        c,
        "form[action='/console/tokens'] input[name=name]",
        "Headquarters",
    )
    .await;
    type_into(c, "input[name=token_file]", &file.display().to_string()).await;
    click(c, "input[name=consent]").await;
    click(c, "form[action='/console/tokens'] button").await;
    wait_text(c, "Headquarters").await;
    click(c, "form[action$='/sync'] button").await;
    wait_text(c, "Pages").await;
    let token_row = c
        .find(Locator::Css("tr[data-token]"))
        .await
        .expect("the token's row")
        .text()
        .await
        .expect("its text");
    assert!(
        token_row.contains("active") && !token_row.contains("never"),
        "the synced token shows its sync time: {token_row}"
    );

    // A group of the enrolled devices.
    c.goto(&format!("{base}/console/groups"))
        .await
        .expect("groups");
    type_into(
        c,
        "form[action='/console/groups'] input[name=name]",
        "Browser iPhones",
    )
    .await;
    click(c, "form[action='/console/groups'] button").await;
    wait_text(c, "Browser iPhones").await;
    type_into(c, "textarea[name=udids]", &fleet.udids().join("\n")).await;
    click(c, "form[action$='/devices'] button").await;
    wait_text(c, "4 devices").await;
    c.find(Locator::LinkText("Browser iPhones"))
        .await
        .expect("the group")
        .click()
        .await
        .expect("open the group");
    wait_text(c, "A group of devices.").await;
    for udid in fleet.udids() {
        assert!(
            text_of(c).await.contains(&udid),
            "{udid} is not listed in its group"
        );
    }

    // Assign Pages to it from the app's page, then watch without reloading.
    c.goto(&format!("{base}/console")).await.expect("dashboard");
    c.find(Locator::LinkText("Pages"))
        .await
        .expect("Pages")
        .click()
        .await
        .expect("open Pages");
    wait_text(c, "Assignments").await;
    click(c, "form[action$='/assignments'] button").await;
    wait_text(c, "Browser iPhones: required").await;
    c.execute("window.orchardNotReloaded = true;", vec![])
        .await
        .expect("mark the page");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cells = c
            .find_all(Locator::Css("#installs td.status"))
            .await
            .expect("rows");
        let mut installed = 0;
        for cell in &cells {
            installed += usize::from(cell.text().await.unwrap_or_default() == "installed");
        }
        if installed == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{installed}/4 installed on the page:\n{}",
            text_of(c).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let same_page = c
        .execute("return window.orchardNotReloaded === true;", vec![])
        .await
        .expect("marker");
    assert_eq!(
        same_page,
        json!(true),
        "the page was reloaded instead of updated in place"
    );
    screenshot(c, "console-app.png").await;
    let app_path = c.current_url().await.expect("url").path().to_owned();

    // A device's page: its facts, its apps, why its assignment applies; refreshing its
    // inventory is audited under the signed-in token.
    let udid = fleet.udids()[0].clone();
    c.find(Locator::LinkText(&udid))
        .await
        .expect("device link")
        .click()
        .await
        .expect("open the device");
    wait_text(c, "Which assignment applies").await;
    let text = text_of(c).await;
    for fact in [
        "Supervised\nyes",
        "Platform\nios",
        "Pages: required, device licensing, from group Browser iPhones",
        "InstallApplication",
    ] {
        assert!(
            text.contains(fact),
            "the device page lacks {fact:?}:\n{text}"
        );
    }
    screenshot(c, "console-device.png").await;
    // The form answers with the same page: a marker on this one tells when the answer
    // has replaced it (else the audit page could be left before the form was posted).
    c.execute("window.orchardBeforeInventory = true;", vec![])
        .await
        .expect("marker");
    click(c, "form[action$='/inventory'] button").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .execute("return window.orchardBeforeInventory === true;", vec![])
        .await
        .map_or(true, |v| v == json!(true))
    {
        assert!(
            Instant::now() < deadline,
            "the inventory form was never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.goto(&format!("{base}/console/audit?action=device.inventory"))
        .await
        .expect("audit");
    wait_text(c, &format!("bootstrap-admin device.inventory {udid} ok")).await;

    // Numbers has 3 licenses for the group's 4 devices: the one left out shows why.
    c.goto(&format!("{base}/console")).await.expect("dashboard");
    c.find(Locator::LinkText("Numbers"))
        .await
        .expect("Numbers")
        .click()
        .await
        .expect("open Numbers");
    wait_text(c, "Assignments").await;
    click(c, "form[action$='/assignments'] button").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        let mut found = None;
        for row in c
            .find_all(Locator::Css("#installs tbody tr"))
            .await
            .unwrap_or_default()
        {
            let cells = row.find_all(Locator::Css("td")).await.unwrap_or_default();
            let mut texts = Vec::new();
            for cell in &cells {
                texts.push(cell.text().await.unwrap_or_default());
            }
            if texts.get(1).is_some_and(|s| s == "license_failed") {
                found = texts.get(3).cloned();
            }
        }
        if let Some(reason) = found {
            break reason;
        }
        assert!(
            Instant::now() < deadline,
            "no device of Numbers failed:\n{}",
            text_of(c).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!reason.is_empty(), "a failing device shows its reason");

    // Changing the assignment to user licensing warns that the devices have no user;
    // deleting it leaves the app unassigned.
    choose(
        c,
        "form[action^='/console/assignments/'] select[name=license_type]",
        "user",
    )
    .await;
    click(c, "form[action^='/console/assignments/'] button").await;
    wait_text(c, "Warning: 4 device(s) of the group have no user").await;
    click(c, "form[action$='/delete'] button").await;
    wait_text(c, "Not assigned.").await;

    // A user group gets its member by email.
    let user = bed.create_user("ada@example.com").await.expect("user");
    c.goto(&format!("{base}/console/groups"))
        .await
        .expect("groups");
    type_into(
        c,
        "form[action='/console/groups'] input[name=name]",
        "Browser users",
    )
    .await;
    choose(
        c,
        "form[action='/console/groups'] select[name=kind]",
        "user",
    )
    .await;
    click(c, "form[action='/console/groups'] button").await;
    wait_text(c, "Browser users").await;
    type_into(c, "textarea[name=users]", "ada@example.com").await;
    click(c, "form[action$='/users'] button").await;
    wait_text(c, "1 user").await;
    assert!(!text_of(c).await.contains("1 users"), "one user, not users");
    c.find(Locator::LinkText("Browser users"))
        .await
        .expect("the group")
        .click()
        .await
        .expect("open it");
    wait_text(c, &user).await;

    c.goto(&format!("{base}/console")).await.expect("dashboard");
    wait_text(c, "devices seen in the last hour").await;
    screenshot(c, "console-dashboard.png").await;

    // An auditor sees the app but is not offered the assign form, and the server
    // refuses it when posted anyway; a form without its CSRF token is refused too.
    let (status, auditor) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "console-auditor", "role": "auditor" }),
        )
        .await
        .expect("auditor token");
    assert_eq!(status, StatusCode::CREATED, "{auditor}");
    let tls = orchard_agent::tls::client_config(
        orchard_agent::tls::Trust::Only(&bed.server.ca_pem),
        None,
    )
    .expect("TLS");
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie = sign_in(&http, &base, auditor["token"].as_str().expect("secret")).await;
    let page = http
        .get(format!("{base}{app_path}"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("app page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("Browser iPhones: required") && !page.contains(">Assign<"),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let groups = bed.admin.list_all("/v1/groups").await.expect("groups");
    let group_id = groups[0]["id"].as_str().expect("group id").to_owned();
    let fields = [
        ("csrf", csrf.as_str()),
        ("group_id", group_id.as_str()),
        ("intent", "available"),
        ("license_type", "device"),
    ];
    let answer = http
        .post(format!("{base}{app_path}/assignments"))
        .header("cookie", &cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(&fields))
        .send()
        .await
        .expect("assign as auditor");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(answer.text().await.unwrap_or_default().contains("operate"));

    let admin_cookie = sign_in(&http, &base, &bed.admin_token()).await;
    let answer = http
        .post(format!("{base}/console/groups"))
        .header("cookie", &admin_cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(&[("name", "No CSRF"), ("kind", "device")]))
        .send()
        .await
        .expect("form without CSRF");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(answer.text().await.unwrap_or_default().contains("CSRF"));
    let names: std::collections::BTreeSet<_> = bed
        .admin
        .list_all("/v1/groups")
        .await
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        std::collections::BTreeSet::from([
            "Browser iPhones".to_owned(),
            "Browser users".to_owned()
        ]),
        "a refused form changed nothing"
    );

    browser.client.close().await.expect("close the browser");
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_tables_come_in_pages_and_refuse_what_they_do_not_know() {
    let bed = Testbed::builder().start().await.expect("testbed");
    for n in 0..60 {
        bed.enroll_identity(&format!("PAGED-{n:04}"))
            .await
            .expect("enroll");
    }
    let base = bed.server.url.clone();
    let tls = orchard_agent::tls::client_config(
        orchard_agent::tls::Trust::Only(&bed.server.ca_pem),
        None,
    )
    .expect("TLS");
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_out = http
        .get(format!("{base}/console/devices"))
        .send()
        .await
        .expect("answer");
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        signed_out.headers()[reqwest::header::LOCATION],
        "/console/login"
    );
    let cookie = sign_in(&http, &base, &bed.admin_token()).await;
    let get = |path: String| {
        let request = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie.clone());
        async move {
            let answer = request.send().await.expect("answer");
            (answer.status(), answer.text().await.unwrap_or_default())
        }
    };
    let (status, first) = get("/console/devices?platform=ios".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.matches("href=\"/console/devices/PAGED-").count(), 50);
    let at = first
        .find("/console/devices?after=")
        .expect("a next page link");
    let next = first[at..]
        .split('"')
        .next()
        .unwrap_or_default()
        .replace("&amp;", "&");
    let (_, second) = get(next).await;
    assert_eq!(second.matches("href=\"/console/devices/PAGED-").count(), 10);
    assert!(
        !second.contains("Next page"),
        "the last page has no next one"
    );
    let (status, page) = get("/console/devices?platform=windows".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("not a platform"), "{page}");
    let (status, _) = get("/console/devices/not%20a%20udid".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get("/console/devices/NO-SUCH-DEVICE".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, page) = get("/console/audit?since=yesterday".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("not a time"), "{page}");
    let answer = http
        .get(format!("{base}/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("dashboard");
    let csp = answer.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    bed.shutdown().await;
}
