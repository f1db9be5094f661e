//! A wasi:cli command component: valid WebAssembly, wrong world. The host
//! must refuse to load it as a processor with a clear error.

fn main() {
    println!("hello from wrong-world");
}
