//! weft's resource model.
pub mod duration;
pub mod quantity;
