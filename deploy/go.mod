module github.com/gerritflow/gerritflow/deploy

go 1.26.0
