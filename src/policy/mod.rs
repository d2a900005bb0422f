//! The policy core: configuration, compiled policy, decisions. No proxy-wasm import.
pub mod name;
