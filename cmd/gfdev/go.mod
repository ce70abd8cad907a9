module github.com/gerritflow/gerritflow/cmd/gfdev

go 1.26.0
