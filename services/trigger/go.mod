module github.com/gerritflow/gerritflow/services/trigger

go 1.26.0
