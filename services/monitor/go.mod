module github.com/gerritflow/gerritflow/services/monitor

go 1.26.0
