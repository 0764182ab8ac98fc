//! `hearth-rapi-echo`: the smallest custom runtime over Lambda's Runtime API, for the bench's
//! `warm.runtime_api` scenario. One kept-alive connection to `AWS_LAMBDA_RUNTIME_API`; each
//! event is posted back as the response. No library: what it costs is hearth's Runtime API path.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

fn main() {
    if let Err(e) = serve() {
        eprintln!("hearth-rapi-echo: {e}");
        std::process::exit(1);
    }
}

fn serve() -> std::io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|_| std::io::Error::other("AWS_LAMBDA_RUNTIME_API is not set"))?;
    let stream = TcpStream::connect(&api)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut body = Vec::new();
    let mut request = Vec::new();
    loop {
        writer
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: rapi\r\n\r\n")?;
        let (id, len) = read_head(&mut reader)?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        request.clear();
        write!(
            request,
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: rapi\r\nContent-Length: {len}\r\n\r\n"
        )?;
        request.extend_from_slice(&body);
        writer.write_all(&request)?;
        let (_, len) = read_head(&mut reader)?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
}

/// Reads a response head; returns its request id header (if any) and Content-Length.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(String, usize)> {
    let mut id = String::new();
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other(
                "the Runtime API closed the connection",
            ));
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok((id, len));
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                id = value.trim().to_owned();
            } else if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().unwrap_or(0);
            }
        }
    }
}
