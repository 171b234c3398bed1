package main

import (
	"bufio"
	"io"
	"strconv"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
)

// writeOPAData writes the world as one JSON document for OPA's store:
//
//	{"users": {"u-0": {...}, ...},
//	 "records": {"contact": {"c-1": {...}, ...}, "opportunity": {...}}}
//
// Each user and record is the JSON crmauthz's index stores for it (user
// defaults filled in: contacts_enabled and opportunities_enabled true), so
// the two servers decide on identical documents.
func writeOPAData(out io.Writer, w dataset.World) error {
	bw := bufio.NewWriterSize(out, 256<<10)
	c := w.Config()
	var b []byte
	flush := func(force bool) error {
		if len(b) < 128<<10 && !force {
			return nil
		}
		_, err := bw.Write(b)
		b = b[:0]
		return err
	}
	b = append(b, `{"users":{`...)
	for i := 0; i < c.Users; i++ {
		u := w.UserAt(i)
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, u.ID)
		b = append(b, `:{"id":`...)
		b = strconv.AppendQuote(b, u.ID)
		b = append(b, `,"role":`...)
		b = strconv.AppendQuote(b, u.Role)
		b = append(b, `,"location_ids":[`...)
		b = strconv.AppendQuote(b, u.Location)
		b = append(b, `],"assigned_data_only":`...)
		b = strconv.AppendBool(b, u.AssignedDataOnly)
		b = append(b, `,"contacts_enabled":true,"opportunities_enabled":true}`...)
		if err := flush(false); err != nil {
			return err
		}
	}
	b = append(b, `},"records":{`...)
	for ti, typ := range []string{index.TypeContact, index.TypeOpportunity} {
		if ti > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, typ)
		b = append(b, ":{"...)
		first := true
		for i := 0; i < c.Records; i++ {
			r := w.RecordAt(i)
			if r.Type != typ {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = strconv.AppendQuote(b, r.ID)
			b = append(b, ':')
			b = r.AppendJSON(b)
			if err := flush(false); err != nil {
				return err
			}
		}
		b = append(b, '}')
	}
	b = append(b, "}}\n"...)
	if err := flush(true); err != nil {
		return err
	}
	return bw.Flush()
}
