module devrigbench

go 1.26

require github.com/devrig/libdevrig/bindings/go v0.0.0

replace github.com/devrig/libdevrig/bindings/go => ../../bindings/go
