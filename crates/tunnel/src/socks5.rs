//! The server side of a SOCKS5 handshake (RFC 1928), without authentication and with
//! CONNECT to IPv4 addresses only.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u8 = 5;
const METHOD_NO_AUTHENTICATION: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const COMMAND_CONNECT: u8 = 0x01;
const ADDRESS_IPV4: u8 = 0x01;
const ADDRESS_DOMAIN: u8 = 0x03;
const ADDRESS_IPV6: u8 = 0x04;

/// Reply codes of RFC 1928, section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowedByRuleset = 0x02,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// Error of a SOCKS5 negotiation that ended without a CONNECT target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NegotiationError {
    #[error("SOCKS version {0} is not supported; expected 5")]
    Version(u8),
    #[error("the client offers no method without authentication")]
    NoAcceptableMethod,
    /// The request got this reply code, and the connection should close.
    #[error("request rejected with SOCKS reply {0:?}")]
    Rejected(Reply),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the method selection and the request, and returns the CONNECT target.
/// Requests that cannot be served get their reply code here.
pub(crate) async fn negotiate<S>(stream: &mut S) -> Result<SocketAddrV4, NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await?;
    let [version, method_count] = header;
    if version != VERSION {
        return Err(NegotiationError::Version(version));
    }

    let mut methods = vec![0u8; usize::from(method_count)];
    stream.read_exact(&mut methods).await?;
    if !methods.contains(&METHOD_NO_AUTHENTICATION) {
        stream.write_all(&[VERSION, METHOD_NONE_ACCEPTABLE]).await?;
        return Err(NegotiationError::NoAcceptableMethod);
    }
    stream
        .write_all(&[VERSION, METHOD_NO_AUTHENTICATION])
        .await?;

    let mut request = [0u8; 4];
    stream.read_exact(&mut request).await?;
    let [version, command, _reserved, address_type] = request;
    if version != VERSION {
        return Err(NegotiationError::Version(version));
    }
    if command != COMMAND_CONNECT {
        return reject(stream, Reply::CommandNotSupported).await;
    }

    match address_type {
        ADDRESS_IPV4 => {
            let mut address = [0u8; 6];
            stream.read_exact(&mut address).await?;
            let ip = Ipv4Addr::new(address[0], address[1], address[2], address[3]);
            let port = u16::from_be_bytes([address[4], address[5]]);
            Ok(SocketAddrV4::new(ip, port))
        }
        // Names and IPv6 addresses are not routed through the tunnel; the request is
        // read whole anyway so that the client gets a clean reply.
        ADDRESS_DOMAIN => {
            let length = stream.read_u8().await?;
            let mut rest = vec![0u8; usize::from(length) + 2];
            stream.read_exact(&mut rest).await?;
            reject(stream, Reply::AddressTypeNotSupported).await
        }
        ADDRESS_IPV6 => {
            let mut rest = [0u8; 18];
            stream.read_exact(&mut rest).await?;
            reject(stream, Reply::AddressTypeNotSupported).await
        }
        _ => reject(stream, Reply::AddressTypeNotSupported).await,
    }
}

/// Sends a reply with the bound address 0.0.0.0:0 (the tunnel has no address that
/// the client could use).
pub(crate) async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, reply: Reply) -> io::Result<()> {
    let message = [VERSION, reply as u8, 0, ADDRESS_IPV4, 0, 0, 0, 0, 0, 0];
    stream.write_all(&message).await
}

async fn reject<S, T>(stream: &mut S, code: Reply) -> Result<T, NegotiationError>
where
    S: AsyncWrite + Unpin,
{
    reply(stream, code).await?;
    Err(NegotiationError::Rejected(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(request: &[u8]) -> (Result<SocketAddrV4, NegotiationError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(request)
            .await
            .expect("duplex accepts the request");
        drop(client.shutdown().await);

        let result = negotiate(&mut server).await;
        drop(server);
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .await
            .expect("duplex returns the reply");
        (result, answer)
    }

    #[tokio::test]
    async fn socks5_connect_ipv4_returns_target() {
        let request = [5, 1, 0, 5, 1, 0, 1, 10, 13, 0, 1, 0, 80];

        let (result, answer) = run(&request).await;

        assert_eq!(
            result.expect("valid request"),
            "10.13.0.1:80".parse().expect("valid address")
        );
        assert_eq!(answer, [5, 0]);
    }

    #[tokio::test]
    async fn socks5_without_no_auth_method_is_rejected() {
        let (result, answer) = run(&[5, 1, 2]).await;

        assert!(matches!(result, Err(NegotiationError::NoAcceptableMethod)));
        assert_eq!(answer, [5, 0xff]);
    }

    #[tokio::test]
    async fn socks5_bind_command_gets_code_7() {
        let request = [5, 1, 0, 5, 2, 0, 1, 10, 13, 0, 1, 0, 80];

        let (result, answer) = run(&request).await;

        assert!(matches!(
            result,
            Err(NegotiationError::Rejected(Reply::CommandNotSupported))
        ));
        assert_eq!(answer[2..4], [5, 7]);
    }

    #[tokio::test]
    async fn socks5_domain_name_gets_code_8() {
        let mut request = vec![5, 1, 0, 5, 1, 0, 3, 7];
        request.extend_from_slice(b"example");
        request.extend_from_slice(&[0, 80]);

        let (result, answer) = run(&request).await;

        assert!(matches!(
            result,
            Err(NegotiationError::Rejected(Reply::AddressTypeNotSupported))
        ));
        assert_eq!(answer[2..4], [5, 8]);
    }

    #[tokio::test]
    async fn socks5_ipv6_gets_code_8() {
        let mut request = vec![5, 1, 0, 5, 1, 0, 4];
        request.extend_from_slice(&[0; 16]);
        request.extend_from_slice(&[0, 80]);

        let (result, answer) = run(&request).await;

        assert!(matches!(
            result,
            Err(NegotiationError::Rejected(Reply::AddressTypeNotSupported))
        ));
        assert_eq!(answer[2..4], [5, 8]);
    }

    #[tokio::test]
    async fn socks5_version_4_is_rejected() {
        let (result, answer) = run(&[4, 1, 0, 80, 10, 13, 0, 1, 0]).await;

        assert!(matches!(result, Err(NegotiationError::Version(4))));
        assert!(answer.is_empty());
    }
}
