use super::*;
use eddy_plugin_sdk::{NewEvent, testing};

fn found(text: &str) -> Vec<(&str, Kind)> {
    let mut out = Vec::new();
    find_pii(text, &mut out);
    out.iter()
        .map(|m| (&text[m.start..m.end], m.kind))
        .collect()
}

#[test]
fn finds_emails() {
    use Kind::Email;
    assert_eq!(
        found("jane.doe+tag@example.co.uk"),
        vec![("jane.doe+tag@example.co.uk", Email)]
    );
    assert_eq!(
        found("mail a@b.io, or (bob_99@mail.example.com)."),
        vec![("a@b.io", Email), ("bob_99@mail.example.com", Email)]
    );
    assert_eq!(
        found("https://x.com/?u=jane%40example.com&a=1"),
        vec![("jane%40example.com", Email)]
    );
    assert_eq!(
        found("dead.beef@example.com"),
        vec![("dead.beef@example.com", Email)]
    );
}

#[test]
fn ignores_non_emails() {
    for text in [
        "@handle",
        "user@localhost",
        "a@b.c",
        "x@1.2.3.4.5",
        "50% off",
        "foo@.com",
        "me@host..com",
    ] {
        assert_eq!(found(text), vec![], "{text}");
    }
}

#[test]
fn finds_ips() {
    use Kind::Ip;
    assert_eq!(found("192.168.1.20"), vec![("192.168.1.20", Ip)]);
    assert_eq!(found("from 10.0.0.1."), vec![("10.0.0.1", Ip)]);
    assert_eq!(
        found("2001:db8:85a3::8a2e:370:7334"),
        vec![("2001:db8:85a3::8a2e:370:7334", Ip)]
    );
    assert_eq!(found("peer [::1]:443"), vec![("::1", Ip)]);
    assert_eq!(
        found("mapped ::ffff:192.0.2.1 ok"),
        vec![("::ffff:192.0.2.1", Ip)]
    );
    assert_eq!(
        found("https://a.com/?ip=8.8.8.8&x=fe80::1"),
        vec![("8.8.8.8", Ip), ("fe80::1", Ip)]
    );
    assert_eq!(found("root@10.0.0.1"), vec![("10.0.0.1", Ip)]);
    assert_eq!(found("http://10.1.2.3:8080/x"), vec![("10.1.2.3", Ip)]);
}

#[test]
fn ignores_non_ips() {
    for text in [
        "1.2.3",
        "256.1.1.1",
        "v1.2.3.4",
        "1.2.3.4.5",
        "1.2.3.4x",
        "Chrome/120.0.6099.109",
        "12:30:45",
        "std::vec",
        "ratio 3:4",
        "::",
        "cafe",
    ] {
        assert_eq!(found(text), vec![], "{text}");
    }
}

fn event() -> NewEvent {
    NewEvent {
        name: "signup".into(),
        distinct_id: "u1".into(),
        ..Default::default()
    }
}

fn run_one(config: &str, event: NewEvent) -> NewEvent {
    let mut out = testing::run::<PiiScrubber>(config, vec![event]).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn prop<'a>(e: &'a NewEvent, key: &str) -> Option<&'a str> {
    e.get(key).and_then(|v| v.as_str())
}

#[test]
fn hashes_deterministically_with_salt() {
    let scrubber = PiiScrubber::new(Config::from_json(r#"{"salt":"s3cret"}"#).unwrap()).unwrap();
    // sha256("s3cret" + "jane@example.com"), first 8 bytes.
    let expected = {
        let d = Sha256::digest(b"s3cretjane@example.com");
        let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    };
    assert_eq!(scrubber.hash("jane@example.com"), expected);
    assert_eq!(expected.len(), 7 + 16);

    let e = run_one(
        r#"{"salt":"s3cret"}"#,
        event()
            .with("email", "jane@example.com")
            .with("note", "write to jane@example.com today")
            .with("count", 3),
    );
    assert_eq!(prop(&e, "email"), Some(expected.as_str()));
    assert_eq!(
        prop(&e, "note"),
        Some(format!("write to {expected} today").as_str())
    );
    assert_eq!(e.get("count").and_then(|v| v.as_i64()), Some(3));

    // Same input, same hash; another salt, another hash.
    let again = run_one(
        r#"{"salt":"s3cret"}"#,
        event().with("email", "jane@example.com"),
    );
    assert_eq!(prop(&again, "email"), Some(expected.as_str()));
    let other = run_one(
        r#"{"salt":"pepper"}"#,
        event().with("email", "jane@example.com"),
    );
    assert_ne!(prop(&other, "email"), Some(expected.as_str()));
}

#[test]
fn remove_mode_removes_and_redacts() {
    let e = run_one(
        r#"{"mode":"remove"}"#,
        event()
            .with("email", "  jane@example.com ")
            .with("client_ip", "203.0.113.9")
            .with("v6", "2001:db8::1")
            .with("msg", "login from 203.0.113.9 by jane@example.com")
            .with("plan", "pro"),
    );
    assert_eq!(e.get("email"), None);
    assert_eq!(e.get("client_ip"), None);
    assert_eq!(e.get("v6"), None);
    assert_eq!(prop(&e, "msg"), Some("login from [ip] by [email]"));
    assert_eq!(prop(&e, "plan"), Some("pro"));
}

#[test]
fn drops_ip_property_by_default() {
    let e = run_one(
        "{}",
        event().with("$ip", "203.0.113.9").with("$os", "Linux"),
    );
    assert_eq!(e.get("$ip"), None);
    assert_eq!(prop(&e, "$os"), Some("Linux"));
}

#[test]
fn drop_properties_replace_default() {
    let e = run_one(
        r#"{"drop_properties":["phone","$ip"]}"#,
        event()
            .with("phone", "+1 555 0100")
            .with("$ip", "1.2.3.4")
            .with("keep", "x"),
    );
    assert_eq!(
        e.properties,
        vec![("keep".to_owned(), OwnedValue::from("x"))]
    );
    let e = run_one(r#"{"drop_properties":[]}"#, event().with("$ip", "1.2.3.4"));
    assert_eq!(prop(&e, "$ip"), Some("1.2.3.4"));
}

#[test]
fn system_properties_are_skipped_except_urls() {
    let e = run_one(
        r#"{"mode":"remove"}"#,
        event()
            .with("$set_email", "jane@example.com")
            .with("$current_url", "https://a.com/reset?email=jane@example.com")
            .with("$referrer", "http://10.1.2.3:8080/admin"),
    );
    assert_eq!(prop(&e, "$set_email"), Some("jane@example.com"));
    assert_eq!(
        prop(&e, "$current_url"),
        Some("https://a.com/reset?email=[email]")
    );
    assert_eq!(prop(&e, "$referrer"), Some("http://[ip]:8080/admin"));
}

#[test]
fn scans_nested_json() {
    let e = run_one(
        r#"{"mode":"remove"}"#,
        event().with(
            "user",
            OwnedValue::Json(r#"{"email":"jane@example.com","ips":["10.0.0.1"]}"#.into()),
        ),
    );
    assert_eq!(
        e.get("user"),
        Some(eddy_plugin_sdk::Value::Json(
            r#"{"email":"[email]","ips":["[ip]"]}"#
        ))
    );
}

#[test]
fn clean_events_are_kept_unchanged() {
    let input = event()
        .with("plan", "pro")
        .with("price", 9.5)
        .with("url_path", "/a/b.c");
    assert_eq!(run_one("{}", input.clone()), input);
}

#[test]
fn config_errors_name_the_key() {
    let err = testing::run::<PiiScrubber>(r#"{"salty":"x"}"#, vec![])
        .err()
        .unwrap();
    assert!(err.contains("unknown field `salty`"), "{err}");
    let err = testing::run::<PiiScrubber>(r#"{"mode":"mask"}"#, vec![])
        .err()
        .unwrap();
    assert!(err.contains("unknown variant `mask`"), "{err}");
}
