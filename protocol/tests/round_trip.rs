//! Property tests: every format decodes what its encoder wrote, whole or fed in pieces.

use passenger_protocol::channel;
use passenger_protocol::instance::{IntegrationMode, Properties, StartupReport};
use passenger_protocol::loader::{self, LoaderLine, SocketInfo, SocketProtocol};
use passenger_protocol::scgi::{self, DEFAULT_MAX_HEADER};
use passenger_protocol::{Pairs, session};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// Bytes without NUL: what a key or value may hold in the NUL-separated formats.
fn no_nul(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 0..max)
}

/// An SCGI header as the module writes it: CONTENT_LENGTH first, distinct CGI-range keys.
fn scgi_pairs() -> impl Strategy<Value = (u64, Pairs)> {
    (
        any::<u64>(),
        btree_map("[A-Za-z0-9_-]{1,24}", no_nul(64), 0..24),
    )
        .prop_map(|(cl, rest)| {
            let mut pairs = vec![(b"CONTENT_LENGTH".to_vec(), cl.to_string().into_bytes())];
            pairs.extend(
                rest.into_iter()
                    .filter(|(k, _)| k != "CONTENT_LENGTH")
                    .map(|(k, v)| (k.into_bytes(), v)),
            );
            (cl, pairs)
        })
}

fn borrowed(pairs: &Pairs) -> impl Iterator<Item = (&[u8], &[u8])> {
    pairs.iter().map(|(k, v)| (&k[..], &v[..]))
}

fn loader_line() -> impl Strategy<Value = LoaderLine> {
    let keywords = [
        "I have control 1.0",
        "Ready",
        "Error",
        "html: true",
        "html: false",
    ];
    let socket = (
        "[^;\r\n]{0,16}",
        "[^;\r\n]{1,40}",
        prop_oneof![
            Just(SocketProtocol::Session),
            Just(SocketProtocol::HttpSession),
            Just(SocketProtocol::Preloader)
        ],
        any::<u32>(),
    )
        .prop_map(|(name, path, protocol, concurrency)| {
            LoaderLine::Socket(SocketInfo {
                name,
                path,
                protocol,
                concurrency,
                prefetch: 0,
            })
        });
    prop_oneof![
        Just(LoaderLine::Greeting),
        Just(LoaderLine::Ready),
        Just(LoaderLine::Error),
        Just(LoaderLine::Terminator),
        any::<bool>().prop_map(LoaderLine::Html),
        any::<u32>().prop_map(LoaderLine::Prefetch),
        socket,
        "[^\r\n]{1,40}"
            .prop_filter("a keyword or socket line", move |t| {
                !keywords.contains(&t.as_str())
                    && !t.starts_with("socket: ")
                    && !t.starts_with("prefetch: ")
            })
            .prop_map(LoaderLine::Protocol),
        "[^\r\n]{0,40}"
            .prop_filter("a protocol line", |t| !t.starts_with("!> ") && t != "!>")
            .prop_map(LoaderLine::AppOutput),
    ]
}

proptest! {
    #[test]
    fn scgi_header_and_body((cl, pairs) in scgi_pairs(), body in no_nul(32), cut in any::<prop::sample::Index>()) {
        let header = scgi::encode(borrowed(&pairs));
        let mut wire = header.clone();
        wire.extend_from_slice(&body);
        let (decoded, used) = scgi::decode(&wire, DEFAULT_MAX_HEADER).unwrap().unwrap();
        prop_assert_eq!(used, header.len());
        prop_assert_eq!(decoded.content_length, cl);
        prop_assert_eq!(decoded.pairs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>(), pairs.clone());
        prop_assert_eq!(&wire[used..], &body[..]);
        // A partial read is "incomplete", never an error.
        prop_assert_eq!(scgi::decode(&header[..cut.index(header.len())], DEFAULT_MAX_HEADER), Ok(None));
        // The limit is the header's length: exactly fits, one byte less does not.
        let len = header.len() - header.iter().position(|&b| b == b':').unwrap() - 2;
        prop_assert!(scgi::decode(&header, len).unwrap().is_some());
        let refused = matches!(
            scgi::decode(&header, len - 1),
            Err(scgi::ScgiError::TooLarge { .. })
        );
        prop_assert!(refused);
    }

    #[test]
    fn array_message(items in vec(no_nul(32), 0..16), cut in any::<prop::sample::Index>()) {
        let wire = channel::encode_array(&items).unwrap();
        prop_assert_eq!(channel::decode_array(&wire), Ok(Some((items.clone(), wire.len()))));
        prop_assert_eq!(channel::decode_array(&wire[..cut.index(wire.len())]), Ok(None));
        prop_assert_eq!(channel::read_array(&mut &wire[..]).unwrap(), Some(items));
    }

    #[test]
    fn scalar_message(data in vec(any::<u8>(), 0..256), cut in any::<prop::sample::Index>()) {
        let wire = channel::encode_scalar(&data).unwrap();
        prop_assert_eq!(channel::decode_scalar(&wire, data.len()), Ok(Some((&data[..], wire.len()))));
        prop_assert_eq!(channel::decode_scalar(&wire[..cut.index(wire.len())], data.len()), Ok(None));
        prop_assert_eq!(channel::read_scalar(&mut &wire[..], data.len()).unwrap(), Some(data.clone()));
        if !data.is_empty() {
            prop_assert!(channel::decode_scalar(&wire, data.len() - 1).is_err());
        }
    }

    #[test]
    fn session_header(pairs in vec((no_nul(24), no_nul(64)), 0..24), cut in any::<prop::sample::Index>()) {
        let wire = session::encode_header(borrowed(&pairs));
        prop_assert_eq!(session::decode_header(&wire, wire.len()), Ok(Some((pairs.clone(), wire.len()))));
        prop_assert_eq!(session::decode_header(&wire[..cut.index(wire.len())], wire.len()), Ok(None));
    }

    #[test]
    fn cgi_header_names(name in "[A-Za-z0-9-]{1,32}") {
        let cgi = session::cgi_header_name(name.as_bytes()).unwrap();
        prop_assert_eq!(cgi, format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")).into_bytes());
    }

    #[test]
    fn cgi_header_names_drop_other_bytes(name in vec(any::<u8>(), 0..32)) {
        let valid = !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        prop_assert_eq!(session::cgi_header_name(&name).is_some(), valid);
    }

    #[test]
    fn loader_lines(line in loader_line()) {
        prop_assert_eq!(loader::parse_line(&loader::encode_line(&line)), line);
    }

    #[test]
    fn loader_options(options in vec(("[^:\r\n]{0,16}", "[^\r\n]{0,40}"), 0..16)) {
        let text = loader::encode_options(options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        prop_assert_eq!(loader::decode_options(&text), Ok(Some((options, text.len()))));
        prop_assert_eq!(loader::decode_options(&text[..text.len() - 1]), Ok(None));
    }

    #[test]
    fn startup_report(ok in any::<bool>(), texts in vec("[^\0]{0,40}", 3)) {
        let report = match ok {
            true => StartupReport::Ok {
                instance_dir: texts[0].clone(),
                core_socket: texts[1].clone(),
                core_password: texts[2].clone(),
            },
            false => StartupReport::Error(texts[0].clone()),
        };
        let wire = channel::encode_array(&report.to_items()).unwrap();
        let (items, _) = channel::decode_array(&wire).unwrap().unwrap();
        prop_assert_eq!(StartupReport::from_items(&items), Ok(report));
    }

    #[test]
    fn properties_json(
        instance_id in ".{0,20}", name in ".{0,20}", standalone in any::<bool>(),
        server_software in ".{0,20}", passenger_version in ".{0,10}",
        watchdog_pid in any::<u32>(), created_at in any::<u64>(),
    ) {
        let props = Properties {
            instance_id,
            name,
            integration_mode: if standalone { IntegrationMode::Standalone } else { IntegrationMode::Nginx },
            server_software,
            passenger_version,
            watchdog_pid,
            created_at,
        };
        let json = serde_json::to_string_pretty(&props).unwrap();
        prop_assert_eq!(serde_json::from_str::<Properties>(&json).unwrap(), props);
    }
}
