module github.com/gerritflow/gerritflow/services/status

go 1.26.0
