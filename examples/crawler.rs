//! Python tutorial (seed 003): a crawler on a `Pool(3)`: workers fetch pages
//! (`get_page`), and a callback parses each page **in the parent**
//! (`apply_async(get_page, args=(url,), callback=parse_page)`).
//!
//! ```text
//! def get_page(url):
//!     print('<进程%s> get %s' % (os.getpid(), url))
//!     response = requests.get(url)
//!     if response.status_code == 200:
//!         return {'url': url, 'text': response.text}
//! def parse_page(res):
//!     print('<进程%s> parse %s' % (os.getpid(), res['url']))
//!     parse_res = 'url:<%s> size:[%s]\n' % (res['url'], len(res['text']))
//!     with open('db.txt', 'a') as f: f.write(parse_res)
//! p = Pool(3)
//! for url in urls: res_l.append(p.apply_async(get_page, args=(url,), callback=parse_page))
//! p.close(); p.join(); print([res.get() for res in res_l])
//! ```
//!
//! No network is needed: the example serves its pages itself, from a small
//! HTTP/1.0 server on 127.0.0.1 (std only), and the "db" is a list in the
//! parent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use shmproc::Pool;

const PAGES: [(&str, usize); 5] =
    [("/baidu", 120), ("/python", 300), ("/openstack", 80), ("/help", 500), ("/sina", 42)];

/// The local web server: each known path answers 200 with a page of the
/// listed size, anything else 404.
fn serve(server: TcpListener) {
    for conn in server.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let reply = match PAGES.iter().find(|(p, _)| *p == path) {
            Some((p, size)) => {
                let body: String = format!("<html>{p}</html>").chars().cycle().take(*size).collect();
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            }
            None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        let _ = conn.write_all(reply.as_bytes());
    }
}

/// A page as the worker returns it (the seed's `{'url': .., 'text': ..}`).
type Page = Option<(String, String)>;

/// Runs in a pool worker: fetch `url` (`http://127.0.0.1:<port>/<path>`).
fn get_page(url: String) -> Page {
    println!("<process {}> get {url}", std::process::id());
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    let mut s = TcpStream::connect(host).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| (url, body.to_string()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let pool = Pool::new(3)?;
    let server = TcpListener::bind("127.0.0.1:0")?;
    let addr = server.local_addr()?;
    std::thread::spawn(move || serve(server));
    let parent = std::process::id();
    let db = Arc::new(Mutex::new(Vec::new()));
    let mut urls: Vec<String> = PAGES.iter().map(|(p, _)| format!("http://{addr}{p}")).collect();
    urls.push(format!("http://{addr}/missing"));
    let mut res_l = Vec::new();
    for url in urls {
        let db = db.clone();
        // parse_page: runs in this process, when the result is collected.
        let parse_page = move |res: Page| {
            let Some((url, text)) = res else { return };
            println!("<process {}> parse {url}", std::process::id());
            assert_eq!(std::process::id(), parent);
            db.lock().unwrap().push(format!("url:<{url}> size:[{}]", text.len()));
        };
        res_l.push(pool.apply_async_with(get_page, url, parse_page, |e| eprintln!("get_page failed: {e}"))?);
    }
    pool.close();
    pool.join()?;
    let got: Vec<Page> = res_l.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    println!(
        "{} pages fetched, {} not found",
        got.iter().flatten().count(),
        got.iter().filter(|p| p.is_none()).count()
    );
    let db = db.lock().unwrap();
    for line in db.iter() {
        println!("db: {line}");
    }
    assert_eq!(db.len(), PAGES.len());
    println!("callbacks parsed {} pages in the parent", db.len());
    Ok(())
}
