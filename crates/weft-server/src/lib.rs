//! weft api server.
