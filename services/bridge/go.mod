module github.com/gerritflow/gerritflow/services/bridge

go 1.26.0
