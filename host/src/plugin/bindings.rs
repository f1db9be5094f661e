//! Host bindings generated from `wit/` for the `processor` world.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
});
