//! The HTTP/1 work weir does on every proxied request: parsing the
//! client's request head (with its framing verdict), writing the request
//! head for the upstream, parsing the upstream's response head, and
//! writing the response head for the client. Typical browser-sized heads.

#![allow(missing_docs)] // criterion_main! generates undocumented items

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_proxy::bench::{
    encode_request, encode_response_head, parse_request_head, parse_response_head,
};

const REQUEST: &[u8] = b"GET /api/users/42?expand=orders HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\
Connection: keep-alive\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1234\r\n\
Cache-Control: no-store\r\n\
Date: Sun, 22 Nov 2026 21:00:00 GMT\r\n\
Server: envoy\r\n\
X-Request-Id: 6bb4c7e6a21936820000000000000000\r\n\
Set-Cookie: a=1; Path=/; HttpOnly\r\n\
Vary: Accept-Encoding\r\n\r\n";

fn bench(c: &mut Criterion) {
    assert!(parse_request_head(REQUEST), "a valid head");
    assert!(parse_response_head(RESPONSE), "a valid head");
    let mut parts = http::Request::get("/api/users/42?expand=orders")
        .header("host", "shop.example.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0)")
        .header("accept", "application/json, text/plain, */*")
        .header("accept-encoding", "gzip, deflate, br")
        .header(
            "cookie",
            "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark",
        )
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "shop.example.com")
        .header("x-request-id", "6bb4c7e6a21936820000000000000000")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    parts.version = http::Version::HTTP_11;

    let response = {
        let mut resp = http::Response::builder()
            .header("content-type", "application/json; charset=utf-8")
            .header("content-length", "1234")
            .header("cache-control", "no-store")
            .header("date", "Sun, 22 Nov 2026 21:00:00 GMT")
            .header("server", "envoy")
            .header("x-request-id", "6bb4c7e6a21936820000000000000000")
            .header("set-cookie", "a=1; Path=/; HttpOnly")
            .header("vary", "Accept-Encoding")
            .body(())
            .expect("response");
        *resp.version_mut() = http::Version::HTTP_11;
        resp.into_parts().0
    };

    c.bench_function("h1/parse client request head", |b| {
        b.iter(|| parse_request_head(black_box(REQUEST)))
    });
    c.bench_function("h1/encode client response head", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            encode_response_head(black_box(&response), &mut out);
            out.len()
        })
    });
    c.bench_function("h1/encode upstream request head", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            encode_request(black_box(&parts), &mut out);
            out.len()
        })
    });
    c.bench_function("h1/parse upstream response head", |b| {
        b.iter(|| parse_response_head(black_box(RESPONSE)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
