//! The few W3C WebDriver commands the dashboard's browser test needs, spoken to `chromedriver` over
//! plain HTTP/1.1 (one connection per command) with JSON bodies. A test-side client: blocking, no
//! retries, and every failure is a panic naming the command.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key under which WebDriver returns an element's reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session on a WebDriver server.
pub struct Session {
    /// The server's `host:port`.
    server: String,
    /// The session's id.
    id: String,
}

/// An element of the page, as a WebDriver reference.
pub struct Element<'session> {
    session: &'session Session,
    id: String,
}

impl Session {
    /// Opens a session on the WebDriver server at `server` (`host:port`) with `capabilities`
    /// (matched always).
    pub fn open(server: &str, capabilities: Value) -> Self {
        let reply = command(
            server,
            "POST",
            "/session",
            Some(&json!({ "capabilities": { "alwaysMatch": capabilities } })),
        );
        let id = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("new session: no sessionId in {reply}"))
            .to_owned();
        Self {
            server: server.to_owned(),
            id,
        }
    }

    /// Sends one command of this session; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        command(
            &self.server,
            method,
            &format!("/session/{}{path}", self.id),
            body,
        )
    }

    /// Loads `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; returns what it returns.
    pub fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// The page's current markup.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching the CSS `selector`, if there is one now.
    pub fn try_find(&self, selector: &str) -> Option<Element<'_>> {
        let reply = try_command(
            &self.server,
            "POST",
            &format!("/session/{}/element", self.id),
            Some(&json!({ "using": "css selector", "value": selector })),
        )
        .ok()?;
        let id = reply[ELEMENT_KEY].as_str()?.to_owned();
        Some(Element { session: self, id })
    }

    /// The first element matching the CSS `selector`; panics when there is none.
    pub fn find(&self, selector: &str) -> Element<'_> {
        self.try_find(selector)
            .unwrap_or_else(|| panic!("no element matches {selector}"))
    }

    /// The first element matching the CSS `selector`, waiting up to `patience` for one to appear.
    pub fn wait_for_element(&self, selector: &str, patience: Duration) -> Element<'_> {
        let started = Instant::now();
        loop {
            if let Some(element) = self.try_find(selector) {
                return element;
            }
            assert!(
                started.elapsed() < patience,
                "no element matches {selector} within {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        decode_base64(encoded.as_str().expect("a base64 screenshot"))
    }

    /// Ends the session, closing its browser.
    pub fn close(self) {
        self.call("DELETE", "", None);
    }
}

impl Element<'_> {
    /// The element's rendered text.
    pub fn text(&self) -> String {
        self.session
            .call("GET", &format!("/element/{}/text", self.id), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the element.
    pub fn click(&self) {
        self.session.call(
            "POST",
            &format!("/element/{}/click", self.id),
            Some(&json!({})),
        );
    }
}

/// Sends one command; returns its `value`, or panics with the server's error.
fn command(server: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    try_command(server, method, path, body)
        .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"))
}

/// Sends one command; returns its `value`, or the server's error (status and message).
fn try_command(
    server: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(server).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|error| error.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| error.to_string())?;
    // chromedriver keeps the connection open after its reply, whatever the request asked: the
    // reply ends where its length says.
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|error| error.to_string())?;
    let status = status_line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        reader
            .read_line(&mut header)
            .map_err(|error| error.to_string())?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let payload = if chunked {
        read_chunked(&mut reader)?
    } else {
        let length = length.ok_or("a reply with neither a length nor chunks")?;
        let mut payload = vec![0; length];
        reader
            .read_exact(&mut payload)
            .map_err(|error| error.to_string())?;
        payload
    };
    let mut json: Value = serde_json::from_slice(&payload)
        .map_err(|error| format!("{error} in {:?}", String::from_utf8_lossy(&payload)))?;
    if status != "200" {
        return Err(format!("HTTP {status}: {}", json["value"]));
    }
    Ok(json["value"].take())
}

/// The body of a chunked HTTP/1.1 reply.
fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader
            .read_line(&mut size)
            .map_err(|error| error.to_string())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|error| format!("chunk size {size:?}: {error}"))?;
        let mut chunk = vec![0; size + 2];
        reader
            .read_exact(&mut chunk)
            .map_err(|error| error.to_string())?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Decodes standard base64 (with or without padding).
fn decode_base64(text: &str) -> Vec<u8> {
    fn sextet(symbol: u8) -> u32 {
        match symbol {
            b'A'..=b'Z' => u32::from(symbol - b'A'),
            b'a'..=b'z' => u32::from(symbol - b'a') + 26,
            b'0'..=b'9' => u32::from(symbol - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {symbol:#x}"),
        }
    }
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|symbol| !matches!(symbol, b'=' | b'\r' | b'\n'))
        .collect();
    let mut bytes = Vec::with_capacity(symbols.len() * 3 / 4);
    for group in symbols.chunks(4) {
        let bits = group
            .iter()
            .enumerate()
            .fold(0u32, |bits, (index, &symbol)| {
                bits | sextet(symbol) << (18 - 6 * index)
            });
        let whole = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        bytes.extend_from_slice(&whole[..group.len() - 1]);
    }
    bytes
}

#[test]
fn base64_decodes_every_padding() {
    assert_eq!(decode_base64("TWFu"), b"Man");
    assert_eq!(decode_base64("TWE="), b"Ma");
    assert_eq!(decode_base64("TQ=="), b"M");
    assert_eq!(decode_base64("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}

#[test]
fn chunked_replies_are_joined() {
    let mut reply: &[u8] = b"4\r\n{\"va\r\n5\r\nlue\":\r\n3\r\n 1}\r\n0\r\n\r\n";
    assert_eq!(
        read_chunked(&mut reply).as_deref(),
        Ok(&b"{\"value\": 1}"[..])
    );
}
