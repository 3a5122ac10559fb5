//! Rendering and parsing of the wg-quick style config file that the wg-config back end keeps.
//!
//! The file has one `[Interface]` section with the server's private key, listen port and
//! address, then one `[Peer]` section per allocated address:
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! ListenPort = 51820
//! Address = 10.13.0.1/16
//!
//! [Peer]
//! PublicKey = <base64>
//! AllowedIPs = 10.13.0.2/32
//! ```
//!
//! Both functions are pure. Parse errors never quote a `PrivateKey` line.

use ipnet::Ipv4Net;
use zeroize::Zeroizing;

use camwire_api::KeyError;
use camwire_tunnel::{PrivateKey, PublicKey};

/// First lines of every rendered file.
const HEADER: &str = "# WireGuard config managed by camwire-server.\n\
                      # The server rewrites this file from its database on start and whenever\n\
                      # it allocates or releases an address, so manual edits are lost.\n";

/// Contents of a config file.
#[derive(Debug, Clone)]
pub struct WgConfigFile {
    pub interface: InterfaceSection,
    pub peers: Vec<PeerSection>,
}

/// The `[Interface]` section: the server's side of the tunnel.
#[derive(Debug, Clone)]
pub struct InterfaceSection {
    pub private_key: PrivateKey,
    pub listen_port: Option<u16>,
    /// The server's address with the pool's prefix, such as `10.13.0.1/16`.
    pub address: Option<Ipv4Net>,
}

/// A `[Peer]` section: one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSection {
    pub public_key: PublicKey,
    pub allowed_ips: Vec<Ipv4Net>,
}

/// Errors of parsing a config file. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "line {line}: expected `[Interface]`, `[Peer]`, `Key = Value`, a comment or a blank line"
    )]
    MalformedLine { line: usize },
    #[error("line {line}: unknown section [{name}]; expected [Interface] or [Peer]")]
    UnknownSection { line: usize, name: String },
    #[error("line {line}: `{key}` appears before any [Interface] or [Peer] section")]
    KeyOutsideSection { line: usize, key: String },
    #[error("line {line}: a second [Interface] section; a file has exactly one")]
    DuplicateInterface { line: usize },
    #[error("line {line}: `{key}` is set twice in the same section")]
    DuplicateKey { line: usize, key: String },
    #[error(
        "line {line}: invalid PrivateKey; expected 44 base64 characters such as `wg genkey` prints"
    )]
    InvalidPrivateKey { line: usize },
    #[error("line {line}: {source}")]
    InvalidPublicKey { line: usize, source: KeyError },
    #[error("line {line}: invalid {key} value {value:?}; expected {expected}")]
    InvalidValue {
        line: usize,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the file has no [Interface] section with a PrivateKey")]
    MissingInterface,
    #[error("the [Interface] section has no PrivateKey")]
    MissingPrivateKey,
    #[error("the [Peer] section starting on line {line} has no PublicKey")]
    MissingPublicKey { line: usize },
}

/// Renders `config` as the text of a wg-quick config file.
///
/// The text contains the private key, so it is wiped from memory when dropped.
pub fn render(config: &WgConfigFile) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(256 + 100 * config.peers.len()));

    text.push_str(HEADER);
    text.push_str("\n[Interface]\n");
    text.push_str("PrivateKey = ");
    text.push_str(config.interface.private_key.to_base64().as_str());
    text.push('\n');

    if let Some(port) = config.interface.listen_port {
        text.push_str(&format!("ListenPort = {port}\n"));
    }

    if let Some(address) = config.interface.address {
        text.push_str(&format!("Address = {address}\n"));
    }

    for peer in &config.peers {
        text.push_str("\n[Peer]\n");
        text.push_str(&format!("PublicKey = {}\n", peer.public_key.to_base64()));

        if !peer.allowed_ips.is_empty() {
            let networks: Vec<String> = peer.allowed_ips.iter().map(Ipv4Net::to_string).collect();
            text.push_str(&format!("AllowedIPs = {}\n", networks.join(", ")));
        }
    }

    text
}

/// Parses the text of a wg-quick config file.
///
/// Keys are matched without regard to case, as `wg` does. Keys that Camwire does not use
/// (`DNS`, `PostUp`, `Endpoint` and so on) are skipped, and so are comments.
pub fn parse(text: &str) -> Result<WgConfigFile, ParseError> {
    let mut parser = Parser::default();

    for (index, raw_line) in text.lines().enumerate() {
        parser.handle_line(index + 1, raw_line)?;
    }

    parser.finish()
}

/// Section that the parser is filling.
#[derive(Default)]
enum Section {
    #[default]
    None,
    Interface,
    Peer,
}

#[derive(Default)]
struct Parser {
    section: Section,
    private_key: Option<PrivateKey>,
    listen_port: Option<u16>,
    address: Option<Ipv4Net>,
    seen_interface: bool,
    peers: Vec<PeerSection>,
    /// The `[Peer]` being filled: its first line, key and allowed IPs.
    peer: Option<PendingPeer>,
}

struct PendingPeer {
    line: usize,
    public_key: Option<PublicKey>,
    allowed_ips: Option<Vec<Ipv4Net>>,
}

impl Parser {
    fn handle_line(&mut self, line: usize, raw_line: &str) -> Result<(), ParseError> {
        let content = match raw_line.split_once('#') {
            Some((before, _comment)) => before.trim(),
            None => raw_line.trim(),
        };

        if content.is_empty() {
            return Ok(());
        }

        if let Some(name) = content
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            return self.start_section(line, name.trim());
        }

        let Some((key, value)) = content.split_once('=') else {
            return Err(ParseError::MalformedLine { line });
        };

        self.handle_key(line, key.trim(), value.trim())
    }

    fn start_section(&mut self, line: usize, name: &str) -> Result<(), ParseError> {
        self.finish_peer()?;

        if name.eq_ignore_ascii_case("interface") {
            if self.seen_interface {
                return Err(ParseError::DuplicateInterface { line });
            }
            self.seen_interface = true;
            self.section = Section::Interface;
            return Ok(());
        }

        if name.eq_ignore_ascii_case("peer") {
            self.section = Section::Peer;
            self.peer = Some(PendingPeer {
                line,
                public_key: None,
                allowed_ips: None,
            });
            return Ok(());
        }

        Err(ParseError::UnknownSection {
            line,
            name: name.chars().take(64).collect(),
        })
    }

    fn handle_key(&mut self, line: usize, key: &str, value: &str) -> Result<(), ParseError> {
        match self.section {
            Section::None => Err(ParseError::KeyOutsideSection {
                line,
                key: key.chars().take(64).collect(),
            }),
            Section::Interface => self.handle_interface_key(line, key, value),
            Section::Peer => self.handle_peer_key(line, key, value),
        }
    }

    fn handle_interface_key(
        &mut self,
        line: usize,
        key: &str,
        value: &str,
    ) -> Result<(), ParseError> {
        let duplicate = || ParseError::DuplicateKey {
            line,
            key: key.to_owned(),
        };

        if key.eq_ignore_ascii_case("PrivateKey") {
            if self.private_key.is_some() {
                return Err(duplicate());
            }
            let private_key = PrivateKey::from_base64(value)
                .map_err(|_| ParseError::InvalidPrivateKey { line })?;
            self.private_key = Some(private_key);
            return Ok(());
        }

        if key.eq_ignore_ascii_case("ListenPort") {
            if self.listen_port.is_some() {
                return Err(duplicate());
            }
            let port = value.parse().map_err(|_| {
                invalid_value(line, "ListenPort", value, "a UDP port from 0 to 65535")
            })?;
            self.listen_port = Some(port);
            return Ok(());
        }

        if key.eq_ignore_ascii_case("Address") {
            if self.address.is_some() {
                return Err(duplicate());
            }
            let address = value.parse().map_err(|_| {
                invalid_value(
                    line,
                    "Address",
                    value,
                    "an IPv4 address with prefix such as 10.13.0.1/16",
                )
            })?;
            self.address = Some(address);
            return Ok(());
        }

        Ok(())
    }

    fn handle_peer_key(&mut self, line: usize, key: &str, value: &str) -> Result<(), ParseError> {
        let Some(peer) = self.peer.as_mut() else {
            return Err(ParseError::KeyOutsideSection {
                line,
                key: key.to_owned(),
            });
        };

        let duplicate = || ParseError::DuplicateKey {
            line,
            key: key.to_owned(),
        };

        if key.eq_ignore_ascii_case("PublicKey") {
            if peer.public_key.is_some() {
                return Err(duplicate());
            }
            let public_key = PublicKey::from_base64(value)
                .map_err(|source| ParseError::InvalidPublicKey { line, source })?;
            peer.public_key = Some(public_key);
            return Ok(());
        }

        if key.eq_ignore_ascii_case("AllowedIPs") {
            if peer.allowed_ips.is_some() {
                return Err(duplicate());
            }
            let networks = value
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| part.parse::<Ipv4Net>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    invalid_value(
                        line,
                        "AllowedIPs",
                        value,
                        "IPv4 networks such as 10.13.0.2/32, separated by commas",
                    )
                })?;
            peer.allowed_ips = Some(networks);
            return Ok(());
        }

        Ok(())
    }

    fn finish_peer(&mut self) -> Result<(), ParseError> {
        let Some(peer) = self.peer.take() else {
            return Ok(());
        };

        let Some(public_key) = peer.public_key else {
            return Err(ParseError::MissingPublicKey { line: peer.line });
        };

        self.peers.push(PeerSection {
            public_key,
            allowed_ips: peer.allowed_ips.unwrap_or_default(),
        });
        Ok(())
    }

    fn finish(mut self) -> Result<WgConfigFile, ParseError> {
        self.finish_peer()?;

        if !self.seen_interface {
            return Err(ParseError::MissingInterface);
        }

        let Some(private_key) = self.private_key else {
            return Err(ParseError::MissingPrivateKey);
        };

        Ok(WgConfigFile {
            interface: InterfaceSection {
                private_key,
                listen_port: self.listen_port,
                address: self.address,
            },
            peers: self.peers,
        })
    }
}

fn invalid_value(
    line: usize,
    key: &'static str,
    value: &str,
    expected: &'static str,
) -> ParseError {
    ParseError::InvalidValue {
        line,
        key,
        value: value.chars().take(64).collect(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WgConfigFile {
        WgConfigFile {
            interface: InterfaceSection {
                private_key: PrivateKey::generate(),
                listen_port: Some(51820),
                address: Some("10.13.0.1/16".parse().expect("valid CIDR")),
            },
            peers: vec![
                PeerSection {
                    public_key: PrivateKey::generate().public_key(),
                    allowed_ips: vec!["10.13.0.2/32".parse().expect("valid CIDR")],
                },
                PeerSection {
                    public_key: PrivateKey::generate().public_key(),
                    allowed_ips: vec!["10.13.0.3/32".parse().expect("valid CIDR")],
                },
            ],
        }
    }

    #[test]
    fn rendered_file_parses_back() {
        let config = sample();

        let parsed = parse(&render(&config)).expect("own output parses");

        assert_eq!(
            parsed.interface.private_key.public_key(),
            config.interface.private_key.public_key()
        );
        assert_eq!(parsed.interface.listen_port, Some(51820));
        assert_eq!(parsed.interface.address, config.interface.address);
        assert_eq!(parsed.peers, config.peers);
    }

    #[test]
    fn render_layout_matches_wg_quick() {
        let config = sample();
        let private = config.interface.private_key.to_base64();
        let first = config.peers[0].public_key.to_base64();

        let text = render(&config);

        let expected_interface = format!(
            "\n[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.13.0.1/16\n",
            private.as_str()
        );
        let expected_peer = format!("\n[Peer]\nPublicKey = {first}\nAllowedIPs = 10.13.0.2/32\n");
        assert!(text.starts_with("# WireGuard config managed by camwire-server."));
        assert!(text.contains(&expected_interface), "{}", text.as_str());
        assert!(text.contains(&expected_peer), "{}", text.as_str());
        assert_eq!(text.matches("[Peer]").count(), 2);
    }

    #[test]
    fn render_without_peers_has_interface_only() {
        let mut config = sample();
        config.peers.clear();

        let parsed = parse(&render(&config)).expect("parses");

        assert!(parsed.peers.is_empty());
    }

    #[test]
    fn parse_accepts_comments_case_and_extra_keys() {
        let private = PrivateKey::generate();
        let public = PrivateKey::generate().public_key();
        let text = format!(
            "# a comment\n[interface]\n  privatekey=  {} \nDNS = 1.1.1.1\nlistenport = 5000 # trailing\n\n\
             [PEER]\npublickey = {public}\nallowedips = 10.0.0.2/32,10.0.1.0/24\nPersistentKeepalive = 25\n",
            private.to_base64().as_str()
        );

        let parsed = parse(&text).expect("parses");

        assert_eq!(
            parsed.interface.private_key.public_key(),
            private.public_key()
        );
        assert_eq!(parsed.interface.listen_port, Some(5000));
        assert_eq!(parsed.interface.address, None);
        assert_eq!(parsed.peers.len(), 1);
        assert_eq!(parsed.peers[0].public_key, public);
        assert_eq!(parsed.peers[0].allowed_ips.len(), 2);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let key = PrivateKey::generate().to_base64();
        let key = key.as_str();
        let cases: Vec<(String, ParseError)> = vec![
            (
                format!("PrivateKey = {key}\n"),
                ParseError::KeyOutsideSection {
                    line: 1,
                    key: "PrivateKey".into(),
                },
            ),
            (
                "[Interface]\njust words\n".into(),
                ParseError::MalformedLine { line: 2 },
            ),
            (
                "[Interfaces]\n".into(),
                ParseError::UnknownSection {
                    line: 1,
                    name: "Interfaces".into(),
                },
            ),
            (
                "[Interface]\nPrivateKey = short\n".into(),
                ParseError::InvalidPrivateKey { line: 2 },
            ),
            (
                format!("[Interface]\nPrivateKey = {key}\nPrivateKey = {key}\n"),
                ParseError::DuplicateKey {
                    line: 3,
                    key: "PrivateKey".into(),
                },
            ),
            (
                format!("[Interface]\nPrivateKey = {key}\n[Interface]\n"),
                ParseError::DuplicateInterface { line: 3 },
            ),
            (
                "[Interface]\nListenPort = 51820\n".into(),
                ParseError::MissingPrivateKey,
            ),
            ("# empty\n".into(), ParseError::MissingInterface),
            (
                format!("[Interface]\nPrivateKey = {key}\n\n[Peer]\nAllowedIPs = 10.0.0.2/32\n"),
                ParseError::MissingPublicKey { line: 4 },
            ),
        ];

        for (text, expected) in cases {
            assert_eq!(parse(&text).expect_err(&text), expected, "{text}");
        }
    }

    #[test]
    fn parse_rejects_bad_values() {
        let key = PrivateKey::generate().to_base64();
        let key = key.as_str();

        for (line, expected_key) in [
            ("ListenPort = 70000", "ListenPort"),
            ("Address = 10.13.0.1", "Address"),
        ] {
            let text = format!("[Interface]\nPrivateKey = {key}\n{line}\n");

            let error = parse(&text).expect_err(line);

            assert!(
                matches!(error, ParseError::InvalidValue { line: 3, key, .. } if key == expected_key),
                "{line}: {error:?}"
            );
        }

        let text = format!("[Interface]\nPrivateKey = {key}\n[Peer]\nPublicKey = AAAA\n");
        let error = parse(&text).expect_err("short public key");
        assert!(
            matches!(error, ParseError::InvalidPublicKey { line: 4, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn private_key_never_appears_in_errors_or_debug() {
        let secret = "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IHNlY3I=";
        let unpadded = secret.trim_end_matches('=');
        let truncated = &secret[..40];
        let broken_texts = [
            format!("[Interface]\n{unpadded}\n"),
            format!("[Interface]\nPrivateKey = {truncated}\n"),
        ];

        for text in &broken_texts {
            let error = parse(text).expect_err(text);

            assert!(!error.to_string().contains(truncated), "{error}");
            assert!(!format!("{error:?}").contains(truncated));
        }

        let valid = parse(&format!("[Interface]\nPrivateKey = {secret}\n")).expect("parses");
        assert!(!format!("{valid:?}").contains(truncated));
    }
}
