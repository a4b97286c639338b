//! lathe CLI library.
