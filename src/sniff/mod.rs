//! Pure parsers of a connection's first client bytes.
