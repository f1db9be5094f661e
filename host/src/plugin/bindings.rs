//! Host bindings generated from `wit/`: one module per plugin world.
//!
//! The processor world's bindings sit at the top of this module (the host's
//! `log`, `metrics`, `state` and `types` implementations are written against
//! them); [`pattern`] and [`alert`] reuse those imports, so every world
//! links against one [`wasmtime::component::Linker`] and shares the batch
//! type.
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

/// The `alert` world: alert rules whose condition needs code.
pub mod alert {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert",
        with: {
            "eddy:plugin/log": super::eddy::plugin::log,
            "eddy:plugin/metrics": super::eddy::plugin::metrics,
            "eddy:plugin/state": super::eddy::plugin::state,
            "eddy:plugin/types": super::eddy::plugin::types,
        },
    });
}
