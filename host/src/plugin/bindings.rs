//! Host bindings generated from `wit/`: one module per plugin world.
//!
//! The processor world's bindings sit at the top of this module (the host's
//! `log`, `metrics`, `state` and `types` implementations are written against
//! them); [`pattern`] reuses those imports, so both worlds link against one
//! [`wasmtime::component::Linker`] and share the batch type.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
});

/// The `pattern` world: sequence-pattern plugins.
pub mod pattern {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "pattern",
        with: {
            "eddy:plugin/log": super::eddy::plugin::log,
            "eddy:plugin/metrics": super::eddy::plugin::metrics,
            "eddy:plugin/state": super::eddy::plugin::state,
            "eddy:plugin/types": super::eddy::plugin::types,
        },
    });
}
