module github.com/devrig/libdevrig/bindings/go

go 1.26
