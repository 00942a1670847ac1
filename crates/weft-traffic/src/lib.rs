//! RPC governance algorithms (pure code over an injected clock).
