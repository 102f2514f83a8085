//! A fake Hugging Face hub on 127.0.0.1 (a random free port), serving files from memory with
//! exactly what the `hf-hub` crate's blocking client reads:
//!
//! - `GET|HEAD /{org}/{name}/resolve/{revision}/{path}` for `main` or the repo's commit:
//!   regular files answer directly with `etag` = the git blob sha1 and `x-repo-commit`; "LFS"
//!   files (`*.onnx`, `*.onnx_data`, `*.onnx.data`) answer `302` with `x-repo-commit`,
//!   `x-linked-etag` = sha256, `x-linked-size` and an absolute `Location` on `/cdn/<sha256>`,
//!   as the real hub redirects to its CDN.
//! - `GET|HEAD /cdn/<sha256>`: the bytes.
//! - `Range: bytes=a-` / `bytes=a-b` give `206` with `content-range: bytes a-b/len`.
//! - Unknown repos answer 401 (as the hub does without a token), unknown revisions or files 404.
//!
//! Faults make a chosen file fail once (or always, for 404): cut the body, stall it, corrupt it.
//! Every request is logged (method, path, range, authorization) for assertions.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One fake repo: id, the commit `main` points to, and files by repo path.
#[derive(Debug, Clone)]
pub struct MockRepo {
    /// `org/name`.
    pub id: String,
    /// 40 hex digits.
    pub commit: String,
    /// Repo path -> bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MockRepo {
    /// An empty repo.
    pub fn new(id: &str, commit: &str) -> Self {
        Self {
            id: id.to_string(),
            commit: commit.to_string(),
            files: BTreeMap::new(),
        }
    }

    /// Adds every file under `dir` at `prefix/<relative path>`.
    pub fn with_dir(mut self, dir: &Path, prefix: &str) -> Self {
        fn walk(dir: &Path, relative: String, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).expect("fixture dir") {
                let entry = entry.expect("dir entry");
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                };
                if entry.path().is_dir() {
                    walk(&entry.path(), path, out);
                } else {
                    out.insert(path, std::fs::read(entry.path()).expect("fixture file"));
                }
            }
        }
        walk(dir, prefix.trim_matches('/').to_string(), &mut self.files);
        self
    }

    /// Adds one file.
    pub fn with_file(mut self, path: &str, bytes: &[u8]) -> Self {
        self.files.insert(path.to_string(), bytes.to_vec());
        self
    }

    /// Removes one file.
    pub fn without_file(mut self, path: &str) -> Self {
        self.files.remove(path);
        self
    }
}

/// Whether the hub would store `path` in LFS (and redirect it to the CDN).
pub fn is_lfs(path: &str) -> bool {
    path.ends_with(".onnx") || path.ends_with(".onnx_data") || path.ends_with(".onnx.data")
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The git blob sha1 of `bytes`, hex (the hub's etag of a regular file).
pub fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The etag the hub gives `path` (blob name in the cache).
pub fn etag_of(path: &str, bytes: &[u8]) -> String {
    if is_lfs(path) {
        sha256_hex(bytes)
    } else {
        git_sha1_hex(bytes)
    }
}

/// What goes wrong with one file (repo path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Always 404.
    NotFound,
    /// Once: send this many body bytes of a full-body request, then close the connection.
    CutAfter(usize),
    /// Once: send this many body bytes, then hang until the hub is dropped.
    StallAfter(usize),
    /// Once: send the body with its last byte flipped.
    Corrupt,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The request target.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

struct State {
    repos: Vec<MockRepo>,
    /// sha256 of every LFS file -> (repo index, repo path), computed once.
    lfs: HashMap<String, (usize, String)>,
    faults: Mutex<HashMap<String, Fault>>,
    log: Mutex<Vec<LoggedRequest>>,
    shutdown: AtomicBool,
    addr: SocketAddr,
}

/// The running fake hub; dropping it stops the server.
pub struct MockHub {
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl MockHub {
    /// Starts serving `repos` on a free port of 127.0.0.1.
    pub fn start(repos: Vec<MockRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let lfs = repos
            .iter()
            .enumerate()
            .flat_map(|(index, repo)| {
                repo.files
                    .iter()
                    .filter(|(path, _)| is_lfs(path))
                    .map(move |(path, bytes)| (sha256_hex(bytes), (index, path.clone())))
            })
            .collect();
        let state = Arc::new(State {
            repos,
            lfs,
            faults: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            addr: listener.local_addr().expect("local addr"),
        });
        let accept_state = Arc::clone(&state);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_state.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&accept_state);
                std::thread::spawn(move || {
                    let _ = handle(&state, stream);
                });
            }
        });
        Self {
            state,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>` (what `HF_ENDPOINT` takes).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// Makes `repo_path` fail as `fault` describes.
    pub fn fault(&self, repo_path: &str, fault: Fault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .insert(repo_path.to_string(), fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests whose path mentions `fragment`.
    pub fn requests_for(&self, fragment: &str) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(fragment))
            .collect()
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.state.shutdown.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.state.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok(Request {
        method,
        target,
        headers,
    })
}

fn handle(state: &State, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = read_request(&stream)?;
    if state.shutdown.load(Ordering::SeqCst) {
        return Ok(());
    }
    state.log.lock().unwrap().push(LoggedRequest {
        method: request.method.clone(),
        path: request.target.clone(),
        range: request.headers.get("range").cloned(),
        authorization: request.headers.get("authorization").cloned(),
    });
    let head = request.method == "HEAD";
    let path = request.target.split('?').next().unwrap_or_default();
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let found = state
            .lfs
            .get(sha)
            .map(|(index, path)| (path.clone(), &state.repos[*index].files[path]));
        return match found {
            Some((repo_path, bytes)) => {
                serve_body(state, &mut stream, &request, head, &repo_path, bytes, &[])
            }
            None => respond(&mut stream, 404, &[], b"no such blob", head),
        };
    }
    let Some(rest) = path.strip_prefix('/') else {
        return respond(&mut stream, 400, &[], b"bad request", head);
    };
    let segments: Vec<&str> = rest.splitn(5, '/').collect();
    if segments.len() < 5 || segments[2] != "resolve" {
        return respond(&mut stream, 404, &[], b"not found", head);
    }
    let repo_id = format!("{}/{}", segments[0], segments[1]);
    let revision = segments[3].replace("%2F", "/");
    let repo_path = segments[4];
    let Some(repo_index) = state.repos.iter().position(|r| r.id == repo_id) else {
        let headers = [("x-error-code", "RepoNotFound".to_string())];
        return respond(&mut stream, 401, &headers, b"Repository not found", head);
    };
    let repo = &state.repos[repo_index];
    if revision != "main" && revision != repo.commit {
        let headers = [("x-error-code", "RevisionNotFound".to_string())];
        return respond(&mut stream, 404, &headers, b"Revision not found", head);
    }
    let fault = state.faults.lock().unwrap().get(repo_path).copied();
    let Some(bytes) = repo
        .files
        .get(repo_path)
        .filter(|_| fault != Some(Fault::NotFound))
    else {
        let headers = [
            ("x-error-code", "EntryNotFound".to_string()),
            ("x-repo-commit", repo.commit.clone()),
        ];
        return respond(&mut stream, 404, &headers, b"Entry not found", head);
    };
    if is_lfs(repo_path) {
        let sha = state
            .lfs
            .iter()
            .find(|(_, (index, path))| *index == repo_index && path == repo_path)
            .map(|(sha, _)| sha.clone())
            .unwrap_or_else(|| sha256_hex(bytes));
        let headers = [
            ("x-repo-commit", repo.commit.clone()),
            ("x-linked-etag", format!("\"{sha}\"")),
            ("x-linked-size", bytes.len().to_string()),
            ("etag", format!("\"{}\"", git_sha1_hex(sha.as_bytes()))),
            ("location", format!("http://{}/cdn/{sha}", state.addr)),
        ];
        return respond(&mut stream, 302, &headers, b"", head);
    }
    let headers = [
        ("x-repo-commit", repo.commit.clone()),
        ("etag", format!("\"{}\"", git_sha1_hex(bytes))),
    ];
    serve_body(
        state,
        &mut stream,
        &request,
        head,
        repo_path,
        bytes,
        &headers,
    )
}

fn serve_body(
    state: &State,
    stream: &mut TcpStream,
    request: &Request,
    head: bool,
    repo_path: &str,
    bytes: &[u8],
    extra: &[(&str, String)],
) -> std::io::Result<()> {
    let len = bytes.len();
    let range = request.headers.get("range").and_then(|r| {
        let spec = r.strip_prefix("bytes=")?;
        let (start, end) = spec.split_once('-')?;
        let start: usize = start.parse().ok()?;
        let end: usize = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            end.parse::<usize>().ok()?.min(len.saturating_sub(1))
        };
        Some((start, end))
    });
    let mut headers: Vec<(&str, String)> = extra.to_vec();
    let (status, body) = match range {
        Some((start, _)) if start >= len => {
            headers.push(("content-range", format!("bytes */{len}")));
            return respond(stream, 416, &headers, b"", head);
        }
        Some((start, end)) => {
            headers.push(("content-range", format!("bytes {start}-{end}/{len}")));
            (206, &bytes[start..=end])
        }
        None => (200, bytes),
    };
    // Faults hit transfers of content, not hf-hub's one-byte metadata probes.
    let fault = if head || body.len() <= 1 {
        None
    } else {
        let mut faults = state.faults.lock().unwrap();
        match faults.get(repo_path) {
            Some(Fault::NotFound) | None => None,
            Some(_) => faults.remove(repo_path),
        }
    };
    write_head(stream, status, &headers, body.len())?;
    if head {
        return Ok(());
    }
    match fault {
        Some(Fault::CutAfter(n)) => {
            stream.write_all(&body[..n.min(body.len())])?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)
        }
        Some(Fault::StallAfter(n)) => {
            stream.write_all(&body[..n.min(body.len())])?;
            stream.flush()?;
            while !state.shutdown.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Some(Fault::Corrupt) => {
            let mut corrupt = body.to_vec();
            if let Some(last) = corrupt.last_mut() {
                *last ^= 0xff;
            }
            stream.write_all(&corrupt)
        }
        Some(Fault::NotFound) | None => stream.write_all(body),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    }
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    content_length: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {content_length}\r\naccept-ranges: bytes\r\nconnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    write_head(stream, status, headers, body.len())?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()
}
