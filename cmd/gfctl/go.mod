module github.com/gerritflow/gerritflow/cmd/gfctl

go 1.26.0
