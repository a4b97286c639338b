//! Speed benchmark (being written).
fn main() {}
