//! The dashboard at `/`: static files embedded at build time (`host/build.rs`
//! assembles `host/dashboard/` and uPlot), served from memory with ETags,
//! `If-None-Match` and gzip/brotli. The page itself only talks to eddy's
//! public API: one WebSocket (`/v1/ws`) for every channel it shows, and the
//! REST routes for snapshots.

use axum::Router;
use memory_serve::{CacheControl, MemoryServe};

/// The dashboard's routes: `/` (and `/index.html`), `/app.js`, `/style.css`,
/// `/vendor/uPlot.*`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let assets: MemoryServe = memory_serve::load!();
    assets
        .index_file(Some("/index.html"))
        .enable_gzip(true)
        .enable_brotli(true)
        // Revalidate every time: an upgraded eddy shows its new page at once,
        // and an unchanged file costs a 304.
        .html_cache_control(CacheControl::NoCache)
        .cache_control(CacheControl::NoCache)
        .into_router()
}
