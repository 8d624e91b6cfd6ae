//! Black-box tests that start real `concord` processes and drive them with real clients.
