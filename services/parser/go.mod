module github.com/gerritflow/gerritflow/services/parser

go 1.26.0
