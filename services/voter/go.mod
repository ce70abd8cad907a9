module github.com/gerritflow/gerritflow/services/voter

go 1.26.0
