//! weft api client.
