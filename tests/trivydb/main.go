// Command trivydb builds a Trivy vulnerability database (trivy.db and
// metadata.json, the layout github.com/aquasecurity/trivy-db defines) from a
// small JSON file of advisories, so that tests can scan real images with the
// real Trivy and no registry: Trivy's own DB is downloaded from a container
// registry, which the test machines cannot reach.
//
//	go run . -out DIR -advisories advisories.json [-updated-at RFC3339]
//
// Each advisory names a Debian release ("12"), a source package, a
// vulnerability id, a severity and optionally the version that fixes it
// (empty: every installed version is affected).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	"github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/bucket"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/vulnerability"
	bolt "go.etcd.io/bbolt"
)

type advisory struct {
	Release      string `json:"release"`
	Package      string `json:"package"`
	ID           string `json:"id"`
	Severity     string `json:"severity"`
	FixedVersion string `json:"fixed_version"`
	Title        string `json:"title"`
}

func main() {
	out := flag.String("out", "", "directory to write trivy.db and metadata.json into")
	path := flag.String("advisories", "", "JSON file: a list of advisories")
	updated := flag.String("updated-at", "", "the DB's UpdatedAt (RFC 3339; default now)")
	flag.Parse()
	if *out == "" || *path == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, *path, *updated); err != nil {
		fmt.Fprintln(os.Stderr, "trivydb:", err)
		os.Exit(1)
	}
}

func run(out, path, updated string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var advisories []advisory
	if err := json.Unmarshal(raw, &advisories); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	at := time.Now().UTC()
	if updated != "" {
		if at, err = time.Parse(time.RFC3339, updated); err != nil {
			return fmt.Errorf("-updated-at: %w", err)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// DIR holds trivy.db and metadata.json: what Trivy keeps in CACHE/db.
	if err := db.Init(out); err != nil {
		return err
	}
	defer db.Close()
	dbc := db.Config{}
	source := types.DataSource{
		ID:   vulnerability.Debian,
		Name: "Debian Security Tracker (airlock test fixture)",
		URL:  "https://salsa.debian.org/security-tracker-team/security-tracker",
	}
	err = dbc.BatchUpdate(func(tx *bolt.Tx) error {
		for _, a := range advisories {
			sev, err := types.NewSeverity(a.Severity)
			if err != nil {
				return fmt.Errorf("%s: %w", a.ID, err)
			}
			platform := bucket.NewDebian(a.Release).Name()
			detail := types.Advisory{FixedVersion: a.FixedVersion}
			if err := dbc.PutAdvisoryDetail(tx, a.ID, a.Package, []string{platform}, detail); err != nil {
				return err
			}
			// What trivy-db's build does after every source: copy each
			// advisory detail into its platform's bucket (platform/package/id).
			if err := dbc.SaveAdvisoryDetails(tx, a.ID); err != nil {
				return err
			}
			vuln := types.Vulnerability{
				Title:          a.Title,
				Severity:       sev.String(),
				VendorSeverity: types.VendorSeverity{vulnerability.Debian: sev},
			}
			if err := dbc.PutVulnerability(tx, a.ID, vuln); err != nil {
				return err
			}
			if err := dbc.PutDataSource(tx, platform, source); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := dbc.DeleteAdvisoryDetailBucket(); err != nil {
		return err
	}
	return metadata.NewClient(out).Update(metadata.Metadata{
		Version:    db.SchemaVersion,
		NextUpdate: at.Add(24 * time.Hour),
		UpdatedAt:  at,
	})
}
