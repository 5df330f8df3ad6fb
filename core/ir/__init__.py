"""The formula IR: immutable expression trees over i-, j- and parameter variables."""
