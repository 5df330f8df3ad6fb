"""The engines shipped with the core: the reference engine and native-cpu (with its C build)."""
