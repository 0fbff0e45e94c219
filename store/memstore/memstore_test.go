package memstore_test

import (
	"testing"

	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, memstore.New())
}
